#!/usr/bin/env bash
# The broker's garbage collector and the edge's latency tail (deploy/README.md, "The broker's garbage
# collector"), release build. For each setting of nats-server's Go runtime in turn, and ROUNDS times
# alternating: a fresh NATS and edge, PREFILL seconds of wrk (64 keep-alive connections, the 1 KB bodies
# of installing.lua; it fills the stream and the broker's de-duplication map as the peak run of ingest.sh
# does), then SECONDS_AT_RATE at RATE events/s from telemetry-loadgen (open loop). Prints per run the 202s'
# p50/p99/p99.9, the broker's collections (GODEBUG=gctrace=1), resident memory and CPU, and the edge's CPU,
# then per setting the median p99.
# NO_BUILD=1 skips the release build.
# Usage: deploy/bench/broker-gc.sh [ROUNDS, default 5]
#        env: SETTINGS (';'-separated, default "GOGC=400 GOMEMLIMIT=1GiB;GOGC=100"), RATE (11000),
#             SECONDS_AT_RATE (10), PREFILL (10)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
ROUNDS=${1:-5}
RATE=${RATE:-11000} SECS=${SECONDS_AT_RATE:-10} PREFILL=${PREFILL:-10}
IFS=';' read -r -a SETTINGS <<<"${SETTINGS:-GOGC=400 GOMEMLIMIT=1GiB;GOGC=100}"

ensure_python_tools
ensure_apt wrk wrk
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -q -p ingest -p traffic --bins
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() { main_shell || return 0; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

one_run() { # one_run SETTING → a line of figures
  local nats_port ingest_port nats_pid ingest_pid n0 i0 line
  rm -rf "$WORK/nats"
  nats_port=$(free_port); ingest_port=$(free_port)
  # shellcheck disable=SC2086 # SETTING is a list of NAME=VALUE words
  env $1 GODEBUG=gctrace=1 nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$nats_port" >/dev/null 2>"$WORK/gc.log" &
  nats_pid=$!; PIDS+=("$nats_pid")
  RATE_LIMIT_RPM=0 LISTEN_ADDR="127.0.0.1:$ingest_port" OPS_ADDR="127.0.0.1:$(free_port)" \
    NATS_URL="nats://127.0.0.1:$nats_port" LOG_LEVEL=warn "$BIN/telemetry-ingest" 2>>"$WORK/ingest.log" &
  ingest_pid=$!; PIDS+=("$ingest_pid")
  wait_http "http://127.0.0.1:$ingest_port/readyz"
  wrk -t2 -c64 -d"${PREFILL}s" -s deploy/bench/installing.lua "http://127.0.0.1:$ingest_port/telemetry" >/dev/null
  local gc0; gc0=$(grep -c '^gc ' "$WORK/gc.log" || true)
  n0=$(cpu_ticks "$nats_pid"); i0=$(cpu_ticks "$ingest_pid")
  line=$("$BIN/telemetry-loadgen" "http://127.0.0.1:$ingest_port/telemetry" "$RATE" "$SECS")
  local sent nats_cpu ingest_cpu gcs rss
  sent=$(field "$line" sent)
  nats_cpu=$(awk "BEGIN {printf \"%.4f\", ($(cpu_ticks "$nats_pid") - $n0) / $(getconf CLK_TCK) * 1000 / $sent}")
  ingest_cpu=$(awk "BEGIN {printf \"%.4f\", ($(cpu_ticks "$ingest_pid") - $i0) / $(getconf CLK_TCK) * 1000 / $sent}")
  gcs=$(( $(grep -c '^gc ' "$WORK/gc.log" || true) - gc0 ))
  rss=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$nats_pid/status")
  kill "$ingest_pid" "$nats_pid"; wait "$ingest_pid" "$nats_pid" 2>/dev/null || true
  echo "p50_ms=$(field "$line" p50_ms) p99_ms=$(field "$line" p99_ms) p999_ms=$(field "$line" p999_ms) sent=$sent collections=$gcs nats_rss_mb=$rss nats_cpu_s_per_1k=$nats_cpu ingest_cpu_s_per_1k=$ingest_cpu"
}

say "== ${#SETTINGS[@]} settings, $ROUNDS rounds: ${PREFILL}s of wrk, then ${SECS}s at $RATE/s"
declare -A P99S
for round in $(seq 1 "$ROUNDS"); do
  for setting in "${SETTINGS[@]}"; do
    result=$(one_run "$setting")
    echo "round $round  [$setting]  $result"
    P99S[$setting]+="$(field "$result" p99_ms) "
  done
done
echo
echo "broker GC settings, $ROUNDS rounds ($(nproc) cores, release; ${PREFILL}s wrk then ${SECS}s at $RATE/s)"
for setting in "${SETTINGS[@]}"; do
  # shellcheck disable=SC2086
  printf '%-32s median p99 %6s ms   (runs: %s)\n' "[$setting]" \
    "$(printf '%s\n' ${P99S[$setting]} | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')" "${P99S[$setting]}"
done
