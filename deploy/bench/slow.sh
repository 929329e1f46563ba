#!/usr/bin/env bash
# Slow clients against the edge (release build): SLOW connections (default 10 000) send their request
# one byte a second, first their headers (closed by HEADER_READ_TIMEOUT_MS and opened again), then their
# bodies (each announcing MAX_BODY_BYTES; it holds what it sent of MAX_BODY_BYTES_IN_FLIGHT until
# REQUEST_TIMEOUT_MS),
# while a normal client posts 1 KB events, 20 a second, each on a fresh connection as a script's curl
# does. Prints the normal client's p50/p99 and whether every answer was a 2xx with the p99 within
# 100 ms, per mode. Settings of the edge (MAX_CONNECTIONS, HEADER_READ_TIMEOUT_MS, ...) pass through.
# With WEB_URL set (e.g. http://127.0.0.1:8081/healthz, a web you started), the headers mode runs
# against it too, the normal client sending GET WEB_URL.
# Usage: deploy/bench/slow.sh [SLOW, default 10000] [SECONDS per mode, default 30]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
SLOW=${1:-10000}
DURATION=${2:-30}

# Every slow connection is a descriptor on both sides.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((SLOW + 1000)) ]; then
  echo "ulimit -n is $(ulimit -n): too low for $SLOW slow connections (raise the hard limit)" >&2; exit 1
fi

ensure_python_tools
cargo build --release --locked -q -p ingest -p traffic --bins
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
wait_http() { for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

NATS_PORT=$(free_port); INGEST_PORT=$(free_port)
nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$NATS_PORT" >/dev/null 2>&1 & PIDS+=($!)
RATE_LIMIT_RPM=0 LISTEN_ADDR="127.0.0.1:$INGEST_PORT" NATS_URL="nats://127.0.0.1:$NATS_PORT" LOG_LEVEL=warn \
  "$BIN/telemetry-ingest" 2>"$WORK/ingest.log" & INGEST_PID=$!; PIDS+=($INGEST_PID)
wait_http "http://127.0.0.1:$INGEST_PORT/readyz"

LINES=()
for mode in headers body; do
  echo "== $SLOW slow connections ($mode, a byte a second) against the edge, normal client 20/s for ${DURATION}s" >&2
  LINE=$("$BIN/telemetry-slow" "http://127.0.0.1:$INGEST_PORT/telemetry" --slow "$SLOW" --mode "$mode" --seconds "$DURATION")
  echo "$LINE" >&2
  LINES+=("edge $LINE")
done
SHED=$(curl -fsS "http://127.0.0.1:$INGEST_PORT/metrics" | grep '^telemetry_ingest_shed_total' || true)
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$INGEST_PID/status")
if [ -n "${WEB_URL:-}" ]; then
  echo "== $SLOW slow connections (headers) against $WEB_URL, normal client GET 20/s for ${DURATION}s" >&2
  LINE=$("$BIN/telemetry-slow" "$WEB_URL" --slow "$SLOW" --mode headers --seconds "$DURATION" --get)
  echo "$LINE" >&2
  LINES+=("web $LINE")
fi

echo
echo "slow clients ($(nproc) cores, release, everything co-located)"
printf '%-6s %-8s %9s %10s %10s %10s %14s  %s\n' target mode ok/sent p50_ms p99_ms max_ms within_100ms statuses
for line in "${LINES[@]}"; do
  field() { echo "$line" | sed -E "s/.* $1=([^ ]+).*/\1/"; }
  printf '%-6s %-8s %9s %10s %10s %10s %14s  %s\n' "${line%% *}" "$(field mode)" "$(field ok)/$(field normal_sent)" \
    "$(field p50_ms)" "$(field p99_ms)" \
    "$(field max_ms)" "$(field within_100ms)" "$(echo "$line" | sed -E 's/.* statuses=(\{[^}]*\}).*/\1/')"
done
echo "edge shed counters: $(echo "$SHED" | tr '\n' ' ')"
echo "peak RSS of telemetry-ingest: $((RSS_KB / 1024)) MB"
