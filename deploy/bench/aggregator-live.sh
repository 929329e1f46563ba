#!/usr/bin/env bash
# The aggregator following a live stream, side by side with another build: NATS, telemetry-ingest and two
# telemetry-aggregator processes (this tree's and the one in BASE_BIN) on the same stream, while
# telemetry-loadgen posts RATE installing events/s for SECS through the edge. Both followers see the same
# events at the same moments, so their CPU per event compares without the noise of two runs. Prints, for
# each, CPU-seconds per 1,000 events from the first event to the last one applied, the events it applied
# and its peak RSS, then the ratio this tree / base.
# (deploy/bench/aggregator.sh measures a replay: events read back to back, which costs a fraction of
# following them as they arrive.)
# Usage: BASE_BIN=DIR deploy/bench/aggregator-live.sh [RATE, default 8000] [SECS, default 40]
#        BASE_BIN=DIR holds another build's telemetry-aggregator (e.g. main's release binaries);
#        NO_BUILD=1 skips the release build (binaries already in the target directory).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
RATE=${1:-8000}
SECS=${2:-40}
[ -n "${BASE_BIN:-}" ] || { sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

ensure_python_tools
PATH="$VENV/bin:$PATH"
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -q -p ingest -p aggregator -p traffic --bins
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() { main_shell || return 0; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

NATS_PORT=$(free_port); INGEST_PORT=$(free_port); NEW_OPS=$(free_port); BASE_OPS=$(free_port)
NATS_URL="nats://127.0.0.1:$NATS_PORT"
env $NATS_GO_ENV nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$NATS_PORT" >/dev/null 2>&1 & PIDS+=($!)
RATE_LIMIT_RPM=0 LISTEN_ADDR="127.0.0.1:$INGEST_PORT" OPS_ADDR="127.0.0.1:$(free_port)" NATS_URL="$NATS_URL" LOG_LEVEL=warn \
  "$BIN/telemetry-ingest" 2>"$WORK/ingest.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$INGEST_PORT/readyz"
NATS_URL="$NATS_URL" OPS_ADDR="127.0.0.1:$NEW_OPS" LOG_LEVEL=warn "$BIN/telemetry-aggregator" 2>"$WORK/new.log" & NEW_PID=$!; PIDS+=($NEW_PID)
NATS_URL="$NATS_URL" OPS_ADDR="127.0.0.1:$BASE_OPS" LOG_LEVEL=warn "$BASE_BIN/telemetry-aggregator" 2>"$WORK/base.log" & BASE_PID=$!; PIDS+=($BASE_PID)
wait_http "http://127.0.0.1:$NEW_OPS/readyz"
wait_http "http://127.0.0.1:$BASE_OPS/readyz"

applied() { curl -fsS "http://127.0.0.1:$1/metrics" | awk '/^telemetry_aggregator_events_total / {print $2; f=1} END {if (!f) print 0}'; }
NEW0=$(cpu_ticks "$NEW_PID"); BASE0=$(cpu_ticks "$BASE_PID")
say "== $RATE installing events/s for ${SECS}s through the edge, both aggregators following"
LINE=$("$BIN/telemetry-loadgen" --forwarded-for "http://127.0.0.1:$INGEST_PORT/telemetry" "$RATE" "$SECS")
say "$LINE"
ACCEPTED=$(echo "$LINE" | sed -E 's/.*statuses=\{202: ([0-9]+).*/\1/')
# Each follower's CPU up to the moment it has applied every accepted event (at most 120 s more).
declare -A DONE_TICKS
for _ in $(seq 1 1200); do
  for side in new base; do
    [ -z "${DONE_TICKS[$side]:-}" ] || continue
    if [ $side = new ]; then ops=$NEW_OPS pid=$NEW_PID; else ops=$BASE_OPS pid=$BASE_PID; fi
    n=$(applied "$ops"); [ "${n%.*}" -ge "$ACCEPTED" ] && DONE_TICKS[$side]=$(cpu_ticks "$pid")
  done
  [ -n "${DONE_TICKS[new]:-}" ] && [ -n "${DONE_TICKS[base]:-}" ] && break
  sleep 0.1
done
[ -n "${DONE_TICKS[new]:-}" ] && [ -n "${DONE_TICKS[base]:-}" ] || { say "an aggregator did not apply all $ACCEPTED events"; exit 1; }
HZ=$(getconf CLK_TCK)
per_1k() { awk "BEGIN {printf \"%.4f\", ($1 - $2) / $HZ * 1000 / $ACCEPTED}"; }
NEW_1K=$(per_1k "${DONE_TICKS[new]}" "$NEW0"); BASE_1K=$(per_1k "${DONE_TICKS[base]}" "$BASE0")
hwm() { echo $(($(awk '/VmHWM/ {print $2}' "/proc/$1/status") / 1024)); }

echo
echo "aggregator following a live stream ($(nproc) cores, release, $RATE events/s for ${SECS}s, everything co-located)"
printf '%-44s %12s\n' "events accepted by the edge" "$ACCEPTED"
printf '%-44s %12s\n' "aggregator CPU-s per 1k events" "$NEW_1K"
printf '%-44s %12s\n' "base aggregator CPU-s per 1k events" "$BASE_1K"
printf '%-44s %12.2f\n' "aggregator / base CPU per event" "$(awk "BEGIN {print $NEW_1K / $BASE_1K}")"
printf '%-44s %12s\n' "aggregator peak RSS (MB)" "$(hwm "$NEW_PID")"
printf '%-44s %12s\n' "base aggregator peak RSS (MB)" "$(hwm "$BASE_PID")"
printf '%-44s %12s\n' "loadgen CPU-s per 1k requests" "$(field "$LINE" cpu_s_per_1k)"
