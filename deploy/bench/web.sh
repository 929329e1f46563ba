#!/usr/bin/env bash
# Web figures (issue 5), on this machine, release build, every server on loopback with its data in a
# temporary dir:
#   1. seed ClickHouse with INSTALLS installs x 4 events (default 2.5M installs = 10M events) straight from
#      numbers() (deploy/bench/web-seed.sql), into the writer's own tables (its migrations, run by starting
#      telemetry-writer once), let a writer's settle job settle them, and wait until ClickHouse has merged
#      the new parts;
#   2. /api/dashboard?days=30 uncached (X-Cache: miss), three cold keys (repo all, ProxmoxVE, ProxmoxVED);
#   3. /api/dashboard?days=30 cached: p50/p99 with wrk, 1 connection;
#   4. 200 concurrent viewers on the cached /dashboard page: p50/p99 with wrk, 200 connections;
#   5. first paint of /dashboard in headless Chromium with the charts drawn: the page's own
#      navigation-start-to-charts time (data-charts-ms), and the whole Chromium run (start to DOM) as an
#      upper bound.
# wrk, ClickHouse and the web share the machine's cores. Usage: deploy/bench/web.sh [INSTALLS]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
INSTALLS=${1:-2500000}
EVENTS=$((INSTALLS * 4))
DAYS=${DAYS:-30}
SECS=${SECS:-15}

ensure_python_tools
ensure_clickhouse
ensure_apt wrk wrk
ensure_apt chromium chromium
PATH="$VENV/bin:$PATH"
cargo build --release --locked -q -p web -p writer --bins
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() { main_shell || return 0; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_http() { for _ in $(seq 1 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
# wrk's "99%  1.23ms" → milliseconds.
wrk_ms() { awk -v p="$1" '$1 == p { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v = v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v = v * 1000 } printf "%.2f", v }'; }

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
# The writer is ready once every migration is applied.
WRITER_OPS=$(free_port)
WRITER_SINK=clickhouse CLICKHOUSE_URL="$CH_URL" NATS_URL="nats://127.0.0.1:$NATS_PORT" OPS_ADDR="127.0.0.1:$WRITER_OPS" \
  LOG_LEVEL=warn "$BIN/telemetry-writer" >"$WORK/writer.log" 2>&1 & WRITER_PID=$!; PIDS+=($WRITER_PID)
wait_http "http://127.0.0.1:$WRITER_OPS/readyz"
kill "$WRITER_PID"; wait "$WRITER_PID" 2>/dev/null || true

echo "== seeding $INSTALLS installs ($EVENTS events) over $DAYS days" >&2
started=$(date +%s.%N)
sed -e "s/{INSTALLS}/$INSTALLS/g; s/{EVENTS}/$EVENTS/g; s/{DAYS}/$DAYS/g; s/{OFFSET}/0/g" deploy/bench/web-seed.sql \
  | curl -fsS "$CH_URL" --data-binary @- 
SEED_SECS=$(echo "$(date +%s.%N) - $started" | bc)
# Version 4: the seeded installs are all touched now; a writer settles them (watermark past the seed).
SEED_END=$(chq "SELECT toUInt32(now())")
settle_started=$(date +%s.%N)
WRITER_SINK=clickhouse CLICKHOUSE_URL="$CH_URL" NATS_URL="nats://127.0.0.1:$NATS_PORT" OPS_ADDR="127.0.0.1:$(free_port)" \
  SETTLE_INTERVAL_SECS=1 SETTLE_LAG_SECS=1 LOG_LEVEL=warn "$BIN/telemetry-writer" >>"$WORK/writer.log" 2>&1 & WRITER_PID=$!; PIDS+=($WRITER_PID)
for _ in $(seq 1 36000); do
  [ "$(chq "SELECT toUInt32(max(watermark)) > $SEED_END FROM telemetry.settle_watermark")" = 1 ] && break
  sleep 0.5
done
kill "$WRITER_PID"; wait "$WRITER_PID" 2>/dev/null || true
SETTLE_SECS=$(echo "$(date +%s.%N) - $settle_started" | bc)
echo "settled in ${SETTLE_SECS}s" >&2
STORED_EVENTS=$(chq "SELECT count() FROM telemetry.events")
STORED_INSTALLS=$(chq "SELECT count() FROM telemetry.installs_final")
echo "seeded: events=$STORED_EVENTS installs=$STORED_INSTALLS in ${SEED_SECS}s" >&2
# A big insert leaves ClickHouse merging parts in the background for a while; measure the steady state.
merge_started=$SECONDS
for _ in $(seq 1 600); do [ "$(chq "SELECT count() FROM system.merges")" = 0 ] && break; sleep 1; done
echo "background merges done after $((SECONDS - merge_started)) s" >&2

WEB_PORT=$(free_port); WEB="http://127.0.0.1:$WEB_PORT"
WEB_LISTEN_ADDR="127.0.0.1:$WEB_PORT" WEB_OPS_ADDR="127.0.0.1:$(free_port)" CLICKHOUSE_URL="$CH_URL" NATS_URL="nats://127.0.0.1:$NATS_PORT" \
  CACHE_WARMUP=false CACHE_TTL_SECS=3600 CACHE_MAX_STALE_SECS=7200 QUERY_TIMEOUT_SECS=300 REQUEST_TIMEOUT_MS=900000 LOG_LEVEL=warn \
  "$BIN/telemetry-web" >"$WORK/web.log" 2>&1 & PIDS+=($!)
wait_http "$WEB/readyz"

echo "== /api/dashboard?days=30 uncached" >&2
UNCACHED=()
for repo in all ProxmoxVE ProxmoxVED; do
  out=$(curl -fsS -o /dev/null -D "$WORK/h" -w '%{time_total}' "$WEB/api/dashboard?days=30&repo=$repo")
  grep -qi '^x-cache: miss' "$WORK/h" || { echo "expected a miss for repo=$repo" >&2; exit 1; }
  UNCACHED+=("$(echo "$out * 1000" | bc | xargs printf '%.0f')")
  echo "repo=$repo: ${UNCACHED[-1]} ms" >&2
done

echo "== /api/dashboard?days=30 cached, 1 connection, ${SECS}s" >&2
curl -fsS -o /dev/null "$WEB/api/dashboard?days=30"
wrk -t1 -c1 -d"${SECS}s" --latency "$WEB/api/dashboard?days=30" >"$WORK/wrk-api.txt"
cat "$WORK/wrk-api.txt" >&2
API_P50=$(wrk_ms 50% <"$WORK/wrk-api.txt"); API_P99=$(wrk_ms 99% <"$WORK/wrk-api.txt")

echo "== /dashboard?days=30 cached, 200 connections, ${SECS}s" >&2
curl -fsS -o /dev/null "$WEB/dashboard?days=30"
wrk -t2 -c200 -d"${SECS}s" --latency "$WEB/dashboard?days=30" >"$WORK/wrk-page.txt"
cat "$WORK/wrk-page.txt" >&2
PAGE_P50=$(wrk_ms 50% <"$WORK/wrk-page.txt"); PAGE_P99=$(wrk_ms 99% <"$WORK/wrk-page.txt")
PAGE_RPS=$(awk '/Requests\/sec/ { print $2 }' "$WORK/wrk-page.txt")

echo "== first paint in Chromium (cached data)" >&2
PAINTS=(); RUNS=()
for i in 1 2 3; do
  started=$(date +%s%N)
  chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$WORK/chrome$i" \
    --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" --virtual-time-budget=5000 \
    --dump-dom "$WEB/dashboard?days=30" >"$WORK/dom.html" 2>/dev/null
  RUNS+=($(( ($(date +%s%N) - started) / 1000000 )))
  grep -q 'data-charts="ready"' "$WORK/dom.html" || { echo "charts not drawn" >&2; exit 1; }
  PAINTS+=("$(sed -nE 's/.*data-charts-ms="([0-9]+)".*/\1/p' "$WORK/dom.html" | head -1)")
done
echo "charts drawn after ${PAINTS[*]} ms (page); chromium runs ${RUNS[*]} ms" >&2

echo "web: installs=$STORED_INSTALLS events=$STORED_EVENTS seed_s=$SEED_SECS settle_s=$SETTLE_SECS uncached_ms=${UNCACHED[*]} cached_api_p50_ms=$API_P50 cached_api_p99_ms=$API_P99 viewers=200 page_p50_ms=$PAGE_P50 page_p99_ms=$PAGE_P99 page_rps=$PAGE_RPS charts_ms=${PAINTS[*]} chromium_run_ms=${RUNS[*]}"
