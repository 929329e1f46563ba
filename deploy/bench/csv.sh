#!/usr/bin/env bash
# CSV export figures, on this machine, release build, every server on loopback with its data in a
# temporary dir:
#   1. seed ClickHouse with INSTALLS installs x 4 events (default 200,000 installs) straight from numbers()
#      (deploy/bench/web-seed.sql), into the writer's own tables (its migrations, run by starting
#      telemetry-writer once), and wait until ClickHouse has merged the new parts;
#   2. round 1: telemetry-web with its CSV defaults (CSV_MAX_CONCURRENT 2, CSV_MAX_ROWS 100,000) and
#      CLIENTS (default 50) parallel curl exports of /api/records.csv?days=365&repo=all (every seeded
#      install), each body read to its end: how many answered 200 with the whole CSV (data rows counted)
#      and how many 503 busy, the web's RSS before, its peak RSS during the round (VmRSS polled every
#      50 ms, and the kernel's VmHWM) and the round's wall time;
#   3. round 2: the same with CSV_MAX_CONCURRENT=CLIENTS, every export streaming at once: what the
#      streaming alone holds in memory.
# A fresh web per round, so VmHWM is the round's own. Cache warm-up is off (its dashboard queries would
# add to the figures) and the query and request timeouts are raised as in web.sh (CLIENTS exports share
# ClickHouse and two cores); nothing else is changed from the web's defaults. Prints numbers, asserts
# nothing. Usage: deploy/bench/csv.sh [INSTALLS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
INSTALLS=${1:-200000}
EVENTS=$((INSTALLS * 4))
DAYS=${DAYS:-30}
CLIENTS=${CLIENTS:-50}
URL_PATH="/api/records.csv?days=365&repo=all"

ensure_python_tools
ensure_clickhouse
PATH="$VENV/bin:$PATH"
cargo build --release --locked -q -p web -p writer --bins
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() { main_shell || return 0; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_http() { for _ in $(seq 1 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
# kB of a /proc/PID/status field (VmRSS, VmHWM).
status_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

CH_HTTP=$(free_port); CH_TCP=$(free_port)
CH="$WORK/clickhouse"; clickhouse_config "$CH" "$CH_HTTP" "$CH_TCP"
clickhouse-server --config-file="$CH/config.xml" >"$WORK/ch.log" 2>&1 & PIDS+=($!)
CH_URL="http://127.0.0.1:$CH_HTTP"
wait_http "$CH_URL/ping"
chq() { curl -fsS "$CH_URL" --data-binary "$1"; }

NATS_PORT=$(free_port)
nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$NATS_PORT" >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.1; done

echo "== tables: the writer's migrations" >&2
WRITER_SINK=clickhouse CLICKHOUSE_URL="$CH_URL" NATS_URL="nats://127.0.0.1:$NATS_PORT" OPS_ADDR="127.0.0.1:$(free_port)" \
  LOG_LEVEL=warn "$BIN/telemetry-writer" >"$WORK/writer.log" 2>&1 & WRITER_PID=$!; PIDS+=($WRITER_PID)
for _ in $(seq 1 300); do
  [ "$(chq "SELECT count() FROM system.tables WHERE database = 'telemetry' AND name = 'installs_final'")" = 1 ] && break
  sleep 0.1
done
kill "$WRITER_PID"; wait "$WRITER_PID" 2>/dev/null || true

echo "== seeding $INSTALLS installs ($EVENTS events) over $DAYS days" >&2
sed -e "s/{INSTALLS}/$INSTALLS/g; s/{EVENTS}/$EVENTS/g; s/{DAYS}/$DAYS/g; s/{OFFSET}/0/g" deploy/bench/web-seed.sql \
  | curl -fsS "$CH_URL" --data-binary @-
for _ in $(seq 1 600); do [ "$(chq "SELECT count() FROM system.merges")" = 0 ] && break; sleep 1; done
STORED_INSTALLS=$(chq "SELECT count() FROM telemetry.installs_final")
echo "seeded: installs_final=$STORED_INSTALLS" >&2

# round NAME CSV_MAX_CONCURRENT: a fresh web, CLIENTS exports at once, one line of figures.
round() {
  local name=$1 slots=$2 port pid web sampler i code rows ok=0 busy=0 other=0 rows_ok=""
  port=$(free_port); web="http://127.0.0.1:$port"
  WEB_LISTEN_ADDR="127.0.0.1:$port" CLICKHOUSE_URL="$CH_URL" NATS_URL="nats://127.0.0.1:$NATS_PORT" \
    CSV_MAX_CONCURRENT="$slots" CACHE_WARMUP=false QUERY_TIMEOUT_SECS=600 REQUEST_TIMEOUT_MS=900000 LOG_LEVEL=warn \
    "$BIN/telemetry-web" >"$WORK/web-$name.log" 2>&1 & pid=$!; PIDS+=($pid)
  wait_http "$web/readyz"
  local rss_before; rss_before=$(status_kb "$pid" VmRSS)
  # The largest VmRSS seen, polled every 50 ms until the round's stop file appears.
  rm -f "$WORK/stop"
  ( peak=0
    while [ ! -e "$WORK/stop" ] && [ -r "/proc/$pid/status" ]; do
      v=$(status_kb "$pid" VmRSS); [ "${v:-0}" -gt "$peak" ] && peak=$v
      sleep 0.05
    done
    echo "$peak" >"$WORK/peak-$name" ) & sampler=$!
  echo "== $name: $CLIENTS exports at once, CSV_MAX_CONCURRENT=$slots" >&2
  local started; started=$(date +%s.%N)
  local clients=()
  for i in $(seq 1 "$CLIENTS"); do
    # The body is read to its end and only its lines counted; curl's exit status tells a cut body.
    ( set +e
      curl -sS -N -D "$WORK/h-$name-$i" "$web$URL_PATH" 2>"$WORK/e-$name-$i" | wc -l >"$WORK/n-$name-$i"
      echo "${PIPESTATUS[0]}" >"$WORK/rc-$name-$i" ) & clients+=($!)
  done
  wait "${clients[@]}"
  local secs; secs=$(printf "%.2f" "$(echo "$(date +%s.%N) - $started" | bc)")
  touch "$WORK/stop"; wait "$sampler"
  local hwm; hwm=$(status_kb "$pid" VmHWM)
  for i in $(seq 1 "$CLIENTS"); do
    code=$(awk 'NR == 1 { print $2 }' "$WORK/h-$name-$i")
    rows=$(($(cat "$WORK/n-$name-$i") - 1)) # minus the header line
    if [ "$code" = 200 ] && [ "$(cat "$WORK/rc-$name-$i")" = 0 ]; then
      ok=$((ok + 1)); rows_ok="$rows_ok $rows"
    elif [ "$code" = 503 ] && grep -qi '^retry-after:' "$WORK/h-$name-$i"; then
      busy=$((busy + 1))
    else
      other=$((other + 1))
    fi
  done
  rows_ok=$(echo "$rows_ok" | tr ' ' '\n' | sed '/^$/d' | sort -n | uniq -c | awk '{ printf "%s%sx%s", sep, $1, $2; sep = "," }')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "csv $name: installs=$STORED_INSTALLS clients=$CLIENTS csv_max_concurrent=$slots ok_200=$ok rows_per_200=${rows_ok:-none} busy_503=$busy other=$other rss_before_kb=$rss_before peak_rss_kb=$(cat "$WORK/peak-$name") vmhwm_kb=$hwm secs=$secs"
}

round default 2
round all "$CLIENTS"
