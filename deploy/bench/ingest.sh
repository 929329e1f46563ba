#!/usr/bin/env bash
# Ingest edge figures (issue: ingest/foundation), measured side by side on this machine, release build:
#   1. peak accepted events/s (wrk, keep-alive, 1 KB installing bodies with distinct execution ids) for
#      telemetry-ingest, a bare axum 202 handler, the bare handler publishing each body to a NATS server
#      of its own (same version and settings) and answering after the ack (the part of the edge's work
#      the contract fixes: its ceiling), and
#      PocketBase's single-record create (the original's per-request path), with the ratios;
#   2. p50/p99 at half of the ingest's peak (open-loop load generator telemetry-loadgen), and the bare
#      handler's p99 at the same rate beside it (what the generator and the machine add by themselves);
#   3. p99 of the 503 answers while NATS is stopped;
#   4. peak RSS of telemetry-ingest;
#   5. CPU seconds per 1,000 events of the ingest (at half of its peak) and of the load generator, and
#      of the publishing bare handler at the same rate (its own and NATS's).
# With BASE_BIN=DIR (a directory holding another build's telemetry-ingest, e.g. main's), that build runs
# beside this one, against a NATS server of its own (the broker's duplicate window holds every message id
# of the last two minutes: on a shared server, whichever build ran second would pay for the other's ids),
# and gets the same measurements, with the ratios new / base.
# NO_BUILD=1 skips the release build (binaries already in the target directory).
# Usage: deploy/bench/ingest.sh [SECONDS per wrk run, default 15]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
DURATION=${1:-15}
CONNECTIONS=${CONNECTIONS:-64}

ensure_python_tools
ensure_apt wrk wrk
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -q -p ingest -p traffic --bins --examples
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() { main_shell || return 0; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

NATS_PORT=$(free_port); INGEST_PORT=$(free_port); BARE_PORT=$(free_port); PUB_PORT=$(free_port); PB_PORT=$(free_port)
PUB_NATS_PORT=$(free_port)
start_nats() { # start_nats DIR PORT: a NATS server in the background, its pid in STARTED_PID
  env $NATS_GO_ENV nats-server -js -sd "$1" -a 127.0.0.1 -p "$2" >/dev/null 2>&1 & STARTED_PID=$!; PIDS+=($STARTED_PID)
}
start_nats "$WORK/nats" "$NATS_PORT"; NATS_PID=$STARTED_PID
# The publishing bare handler's own broker: the duplicate window holds every message id of the last two
# minutes, so on a shared server whichever ran second would pay for the other's ids.
start_nats "$WORK/pub-nats" "$PUB_NATS_PORT"; PUB_NATS_PID=$STARTED_PID
INGEST_OPS_PORT=$(free_port)
RATE_LIMIT_RPM=0 LISTEN_ADDR="127.0.0.1:$INGEST_PORT" OPS_ADDR="127.0.0.1:$INGEST_OPS_PORT" NATS_URL="nats://127.0.0.1:$NATS_PORT" LOG_LEVEL=warn \
  "$BIN/telemetry-ingest" 2>"$WORK/ingest.log" & INGEST_PID=$!; PIDS+=($INGEST_PID)
if [ -n "${BASE_BIN:-}" ]; then
  BASE_PORT=$(free_port); BASE_NATS_PORT=$(free_port)
  start_nats "$WORK/base-nats" "$BASE_NATS_PORT"; BASE_NATS_PID=$STARTED_PID
  RATE_LIMIT_RPM=0 LISTEN_ADDR="127.0.0.1:$BASE_PORT" OPS_ADDR="127.0.0.1:$(free_port)" NATS_URL="nats://127.0.0.1:$BASE_NATS_PORT" LOG_LEVEL=warn \
    "$BASE_BIN/telemetry-ingest" 2>"$WORK/base.log" & BASE_PID=$!; PIDS+=($BASE_PID)
  wait_http "http://127.0.0.1:$BASE_PORT/readyz"
fi
"$BIN/examples/bare" "127.0.0.1:$BARE_PORT" & BARE_PID=$!; PIDS+=($BARE_PID)
pocketbase superuser upsert bench@example.com benchbenchbench --dir "$WORK/pb" >/dev/null
pocketbase serve --http "127.0.0.1:$PB_PORT" --dir "$WORK/pb" >/dev/null 2>&1 & PB_PID=$!; PIDS+=($PB_PID)
wait_http "http://127.0.0.1:$INGEST_PORT/readyz"
"$BIN/examples/bare" "127.0.0.1:$PUB_PORT" "nats://127.0.0.1:$PUB_NATS_PORT" & PUB_PID=$!; PIDS+=($PUB_PID)
wait_http "http://127.0.0.1:$PUB_PORT/readyz"
wait_http "http://127.0.0.1:$PB_PORT/api/health"

# PocketBase collection with the installing fields, open for public create, like the original's.
TOKEN=$(curl -fsS -X POST "http://127.0.0.1:$PB_PORT/api/collections/_superusers/auth-with-password" \
  -H 'content-type: application/json' -d '{"identity":"bench@example.com","password":"benchbenchbench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
python3 - "$PB_PORT" "$TOKEN" <<'PY'
import json, sys, urllib.request
port, token = sys.argv[1], sys.argv[2]
text = ["random_id","execution_id","type","nsapp","status","os_type","os_version","pve_version","method","cpu_vendor","cpu_model","gpu_vendor","gpu_model","gpu_passthrough","ram_speed","repo_source","note"]
num = ["ct_type","disk_size","core_count","ram_size"]
fields = [{"name": n, "type": "text"} for n in text] + [{"name": n, "type": "number"} for n in num]
req = urllib.request.Request(f"http://127.0.0.1:{port}/api/collections", method="POST",
    data=json.dumps({"name": "bench", "type": "base", "createRule": "", "fields": fields}).encode(),
    headers={"content-type": "application/json", "authorization": token})
urllib.request.urlopen(req).read()
PY

run_wrk() { # run_wrk NAME URL
  local line
  line=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s deploy/bench/installing.lua "$2" | grep '^WRK')
  echo "$1 $line" >&2
  echo "$line" | sed -E 's/.* rps=([0-9]+).*/\1/'
}
echo "== peak throughput (wrk -t2 -c$CONNECTIONS -d${DURATION}s, 1 KB bodies)" >&2
BARE=$(run_wrk bare "http://127.0.0.1:$BARE_PORT/telemetry")
PUBLISH=$(run_wrk bare+publish "http://127.0.0.1:$PUB_PORT/telemetry")
INGEST=$(run_wrk ingest "http://127.0.0.1:$INGEST_PORT/telemetry")
[ -n "${BASE_BIN:-}" ] && BASE=$(run_wrk base "http://127.0.0.1:$BASE_PORT/telemetry")
PB=$(run_wrk pocketbase "http://127.0.0.1:$PB_PORT/api/collections/bench/records")
STORED=$(curl -fsS "http://127.0.0.1:$INGEST_OPS_PORT/metrics" | awk '/^telemetry_ingest_accepted_total/ {print $2}')

# half_peak PID PORT RATE [NATS_PID] → the loadgen line plus ingest_cpu_s_per_1k=… nats_cpu_s_per_1k=… and
# others_cpu_s=… (what the idle PocketBase and bare handlers used meanwhile: CPU the run had to share)
others_ticks() { # others_ticks PID → CPU ticks of the idle PocketBase and bare handlers but PID
  local sum=0 p
  for p in "$PB_PID" "$BARE_PID" "$PUB_PID"; do [ "$p" = "$1" ] || sum=$((sum + $(cpu_ticks "$p"))); done
  echo "$sum"
}
half_peak() {
  local before nats_before others_before line nats=${4:-$NATS_PID}
  before=$(cpu_ticks "$1"); nats_before=$(cpu_ticks "$nats")
  others_before=$(others_ticks "$1")
  line=$("$BIN/telemetry-loadgen" "http://127.0.0.1:$2/telemetry" "$3" "$DURATION")
  local hz sent; hz=$(getconf CLK_TCK); sent=$(field "$line" sent)
  echo "$line ingest_cpu_s_per_1k=$(awk "BEGIN {printf \"%.4f\", ($(cpu_ticks "$1") - $before) / $hz * 1000 / $sent}")" \
    "nats_cpu_s_per_1k=$(awk "BEGIN {printf \"%.4f\", ($(cpu_ticks "$nats") - $nats_before) / $hz * 1000 / $sent}")" \
    "others_cpu_s=$(awk "BEGIN {printf \"%.2f\", ($(others_ticks "$1") - $others_before) / $hz}")"
}
HALF=$((INGEST / 2))
echo "== latency at half of the ingest's peak ($HALF/s for ${DURATION}s, open loop)" >&2
HALF_LINE=$(half_peak "$INGEST_PID" "$INGEST_PORT" "$HALF")
echo "$HALF_LINE" >&2
echo "== the bare handler at the same rate: the generator's and the machine's share of the latency" >&2
BARE_HALF_LINE=$("$BIN/telemetry-loadgen" "http://127.0.0.1:$BARE_PORT/telemetry" "$HALF" "$DURATION")
echo "$BARE_HALF_LINE" >&2
echo "== the publishing bare handler at the same rate: the contract's share of the edge's CPU" >&2
PUB_HALF_LINE=$(half_peak "$PUB_PID" "$PUB_PORT" "$HALF" "$PUB_NATS_PID")
echo "$PUB_HALF_LINE" >&2
if [ -n "${BASE_BIN:-}" ]; then
  BASE_HALF=$((BASE / 2))
  echo "== base: latency at half of its peak ($BASE_HALF/s), and at the new build's half peak ($HALF/s)" >&2
  BASE_HALF_LINE=$(half_peak "$BASE_PID" "$BASE_PORT" "$BASE_HALF" "$BASE_NATS_PID"); echo "$BASE_HALF_LINE" >&2
  BASE_SAME_LINE=$(half_peak "$BASE_PID" "$BASE_PORT" "$HALF" "$BASE_NATS_PID"); echo "$BASE_SAME_LINE" >&2
fi

echo "== 503 latency with NATS stopped (1000/s for 5 s)" >&2
kill "$NATS_PID"; wait "$NATS_PID" 2>/dev/null || true
for _ in $(seq 1 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$INGEST_PORT/readyz")" = 503 ] && break; sleep 0.1; done
DOWN_LINE=$("$BIN/telemetry-loadgen" "http://127.0.0.1:$INGEST_PORT/telemetry" 1000 5)
echo "$DOWN_LINE" >&2
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$INGEST_PID/status")
[ -n "${BASE_BIN:-}" ] && BASE_RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$BASE_PID/status")

echo
echo "ingest benchmark ($(nproc) cores, release, wrk co-located)"
printf '%-44s %12s\n' "bare axum 202 (req/s)" "$BARE"
printf '%-44s %12s\n' "bare + publish, 202 after the ack (req/s)" "$PUBLISH"
printf '%-44s %12s\n' "telemetry-ingest accepted (req/s)" "$INGEST"
printf '%-44s %12s\n' "PocketBase single-record create (req/s)" "$PB"
printf '%-44s %12s\n' "events stored by ingest (metric)" "$STORED"
printf '%-44s %12.2f   (aim >= 0.50)\n' "ingest / bare" "$(awk "BEGIN {print $INGEST / $BARE}")"
printf '%-44s %12.2f   (ceiling of ingest / bare)\n' "bare + publish / bare" "$(awk "BEGIN {print $PUBLISH / $BARE}")"
printf '%-44s %12.2f\n' "ingest / (bare + publish)" "$(awk "BEGIN {print $INGEST / $PUBLISH}")"
printf '%-44s %12.1f   (aim >= 20)\n' "ingest / PocketBase" "$(awk "BEGIN {print $INGEST / $PB}")"
printf '%-44s %12s   (aim <= 5)\n' "p99 ms at half peak" "$(echo "$HALF_LINE" | sed -E 's/.* p99_ms=([0-9.]+).*/\1/')"
printf '%-44s %12s\n' "p50 ms at half peak" "$(field "$HALF_LINE" p50_ms)"
printf '%-44s %12s\n' "bare p99 ms at the same rate" "$(field "$BARE_HALF_LINE" p99_ms)"
printf '%-44s %12s   (aim <= 100)\n' "p99 ms of 503 with NATS stopped" "$(echo "$DOWN_LINE" | sed -E 's/.* p99_ms=([0-9.]+).*/\1/')"
printf '%-44s %12s   (aim <= 50)\n' "peak RSS of telemetry-ingest (MB)" "$((RSS_KB / 1024))"
printf '%-44s %12s\n' "ingest CPU-s per 1k events at half peak" "$(field "$HALF_LINE" ingest_cpu_s_per_1k)"
printf '%-44s %12s\n' "NATS CPU-s per 1k events at half peak" "$(field "$HALF_LINE" nats_cpu_s_per_1k)"
printf '%-44s %12s\n' "idle PocketBase + bare handlers CPU-s then" "$(field "$HALF_LINE" others_cpu_s)"
printf '%-44s %12s\n' "bare + publish CPU-s per 1k, same rate" "$(field "$PUB_HALF_LINE" ingest_cpu_s_per_1k)"
printf '%-44s %12s\n' "its NATS CPU-s per 1k" "$(field "$PUB_HALF_LINE" nats_cpu_s_per_1k)"
printf '%-44s %12s\n' "bare + publish p99 ms, same rate" "$(field "$PUB_HALF_LINE" p99_ms)"
printf '%-44s %12s   (aim <= 0.02)\n' "loadgen CPU-s per 1k requests at half peak" "$(field "$HALF_LINE" cpu_s_per_1k)"
if [ -n "${BASE_BIN:-}" ]; then
  echo
  echo "beside the build in $BASE_BIN (same run, a NATS server of its own)"
  printf '%-44s %12s\n' "base telemetry-ingest accepted (req/s)" "$BASE"
  printf '%-44s %12.2f\n' "base / bare" "$(awk "BEGIN {print $BASE / $BARE}")"
  printf '%-44s %12.2f\n' "ingest / base (peak req/s)" "$(awk "BEGIN {print $INGEST / $BASE}")"
  printf '%-44s %12s\n' "base p99 ms at its half peak" "$(field "$BASE_HALF_LINE" p99_ms)"
  printf '%-44s %12s\n' "base p99 ms at the new build's half peak" "$(field "$BASE_SAME_LINE" p99_ms)"
  printf '%-44s %12s\n' "base CPU-s per 1k events (new's half peak)" "$(field "$BASE_SAME_LINE" ingest_cpu_s_per_1k)"
  printf '%-44s %12s\n' "its NATS CPU-s per 1k" "$(field "$BASE_SAME_LINE" nats_cpu_s_per_1k)"
  printf '%-44s %12.2f\n' "ingest / base CPU per event (same rate)" \
    "$(awk "BEGIN {print $(field "$HALF_LINE" ingest_cpu_s_per_1k) / $(field "$BASE_SAME_LINE" ingest_cpu_s_per_1k)}")"
  printf '%-44s %12s\n' "base peak RSS (MB)" "$((BASE_RSS_KB / 1024))"
fi
