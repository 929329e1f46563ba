#!/usr/bin/env bash
# Slow clients against the edge and the web (release build, their default settings): SLOW connections
# (default 10 000) send their request one byte a second, first their headers (closed by
# HEADER_READ_TIMEOUT_MS, or at the connection cap for a new client, and opened again), then their bodies
# (each announcing MAX_BODY_BYTES; on the edge it holds what it sent of MAX_BODY_BYTES_IN_FLIGHT until
# REQUEST_TIMEOUT_MS), while a normal client sends a request 20 times a second, each on a fresh
# connection as a script's curl does: on the edge it posts a 1 KB event, on the web it gets /livez (the
# web runs without ClickHouse here: only its HTTP serving is measured). Prints the normal client's
# p50/p99 and whether every answer was a 2xx with the p99 within 100 ms, per target and mode, the
# connections each server closed at the cap for a new one, and each server's peak RSS. The edge runs
# with RATE_LIMIT_RPM=0 (the normal client is one address sending 20 a second); every other setting is
# the default unless set in the environment (MAX_CONNECTIONS, HEADER_READ_TIMEOUT_MS, ...; they pass
# through to both servers).
# Usage: deploy/bench/slow.sh [SLOW, default 10000] [SECONDS per mode, default 30] [TARGETS, default "edge web"]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
SLOW=${1:-10000}
DURATION=${2:-30}
TARGETS=${3:-edge web}

# Every slow connection is a descriptor on both sides (the servers raise their own soft limit).
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((SLOW + 1000)) ]; then
  echo "ulimit -n is $(ulimit -n): too low for $SLOW slow connections (raise the hard limit)" >&2; exit 1
fi

ensure_python_tools
[ -n "${SLOW_NO_BUILD:-}" ] || cargo build --release --locked -q -p ingest -p web -p traffic --bins
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() { main_shell || return 0; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
wait_http() { for _ in $(seq 1 600); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
wait_port() { for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not open" >&2; exit 1; }
counter() { curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($1, m) == 1 {s += $2} END {print s + 0}'; }

NATS_PORT=$(free_port)
nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$NATS_PORT" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$NATS_PORT"

LINES=()
SUMMARY=()
for target in $TARGETS; do
  PORT=$(free_port); OPS=$(free_port)
  case "$target" in
    edge)
      RATE_LIMIT_RPM=0 LISTEN_ADDR="127.0.0.1:$PORT" OPS_ADDR="127.0.0.1:$OPS" \
        NATS_URL="nats://127.0.0.1:$NATS_PORT" LOG_LEVEL=warn \
        "$BIN/telemetry-ingest" 2>"$WORK/ingest.log" & PID=$!
      URL="http://127.0.0.1:$PORT/telemetry"; READY="http://127.0.0.1:$OPS/readyz"; GET=() ;;
    web)
      WEB_LISTEN_ADDR="127.0.0.1:$PORT" WEB_OPS_ADDR="127.0.0.1:$OPS" NATS_URL="nats://127.0.0.1:$NATS_PORT" \
        CLICKHOUSE_URL="http://127.0.0.1:$(free_port)" CACHE_WARMUP=false LOG_LEVEL=warn \
        "$BIN/telemetry-web" 2>"$WORK/web.log" & PID=$!
      URL="http://127.0.0.1:$PORT/livez"; READY=$URL; GET=(--get) ;;
    *) echo "unknown target $target (edge, web)" >&2; exit 2 ;;
  esac
  PIDS+=($PID)
  wait_http "$READY"
  RSS_START=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  for mode in headers body; do
    echo "== $SLOW slow connections ($mode, a byte a second) against the $target, normal client 20/s for ${DURATION}s" >&2
    LINE=$("$BIN/telemetry-slow" "$URL" --slow "$SLOW" --mode "$mode" --seconds "$DURATION" "${GET[@]}")
    echo "$LINE" >&2
    LINES+=("$target $LINE")
  done
  SHED=$(counter "$OPS" telemetry_http_connections_shed_total)
  RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
  SUMMARY+=("$target: connections closed at the cap for a new one: $SHED; RSS idle $((RSS_START / 1024)) MB, peak $((RSS_KB / 1024)) MB ($(( (RSS_KB - RSS_START) * 1024 / SLOW )) bytes per slow connection)")
  kill "$PID"; wait "$PID" 2>/dev/null || true
done

echo
echo "slow clients ($(nproc) cores, release, everything co-located)"
printf '%-6s %-8s %9s %10s %10s %10s %14s  %s\n' target mode ok/sent p50_ms p99_ms max_ms within_100ms statuses
for line in "${LINES[@]}"; do
  field() { echo "$line" | sed -E "s/.* $1=([^ ]+).*/\1/"; }
  printf '%-6s %-8s %9s %10s %10s %10s %14s  %s\n' "${line%% *}" "$(field mode)" "$(field ok)/$(field normal_sent)" \
    "$(field p50_ms)" "$(field p99_ms)" \
    "$(field max_ms)" "$(field within_100ms)" "$(echo "$line" | sed -E 's/.* statuses=(\{[^}]*\}).*/\1/')"
done
for line in "${SUMMARY[@]}"; do echo "$line"; done
