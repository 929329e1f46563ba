#!/usr/bin/env bash
# Uncached views, the upgrade to schema version 4 and ClickHouse's write cost, old layout vs new, side by
# side in one run on this machine (release build, every server on loopback with its data in a temporary
# dir). For each size in SIZES (events, spread over DAYS days, 4 per install):
#   1. the writer's migrations up to version 3 (CLICKHOUSE_MIGRATE_TO=3), then deploy/bench/web-seed.sql
#      straight into `events` (the views of version 3 fill its install tables);
#   2. version 3's `installs_final` is kept as `old.installs_final` (its own DDL, reading version 3's
#      tables), with `old.events` a view of `telemetry.events`: a web on database `old` answers from the
#      old layout, a web on `telemetry` from the new one, same binary, same ClickHouse;
#   3. the upgrade to version 4, 5 then 6 (a writer start each, CLICKHOUSE_MIGRATE_TO), each timed, with
#      the count and a checksum of every column of `installs_final` before and after; then version 6's
#      rollup job until every pass has a snapshot of every complete day (its time and ClickHouse's CPU);
#   4. each view uncached (X-Cache: miss) on the new web, on a web of the new layout that reads every day
#      from rows (ROLLUP_READS=false, "rows"), then on the old web, for periods 1, 30, 365 days (and all
#      time where the view has it); a table of seconds and the ratios rows / new and old / new. Above
#      OLD_MAX events the old web is not asked (its 365-day views take minutes there): old_s is "-".
# The table's rows for one view across SIZES are the curve of its time against the events stored.
# Then ClickHouse's CPU seconds per 1,000 inserted events (utime + stime of clickhouse-server from
# /proc, around the writer's own insert of CPU_EVENTS events into a fresh database, background merges
# included) with the schema of version 3 and of version 4.
# Usage: deploy/bench/views.sh     SIZES="1000000 3000000 10000000" DAYS=365 CPU_EVENTS=400000
#        OLD_MAX=3000000 by env.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
SIZES=${SIZES:-1000000 3000000 10000000}
OLD_MAX=${OLD_MAX:-3000000}
# The newest schema version of the writer.
LATEST=7
DAYS=${DAYS:-365}
CPU_EVENTS=$((${CPU_EVENTS:-400000} / 4 * 4))

ensure_python_tools
ensure_clickhouse
PATH="$VENV/bin:$PATH"
cargo build --release --locked -q -p web -p writer --bins
cargo build --release --locked -q -p writer --example bench
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
# On failure the servers' and services' logs are kept in deploy/bench/out/views-logs (the data is not).
cleanup() {
  local rc=$?
  main_shell || return 0
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [ "$rc" != 0 ]; then
    local keep="$ROOT/deploy/bench/out/views-logs"
    rm -rf "$keep"; mkdir -p "$keep"
    find "$WORK" -maxdepth 3 -name '*.log' -exec cp {} "$keep/" \; 2>/dev/null || true
    find "$WORK" -maxdepth 4 -path '*/data/*' -prune -o -name 'clickhouse-server*.log' -print -exec cp {} "$keep/" \; 2>/dev/null || true
    echo "failed (exit $rc); logs kept in $keep" >&2
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() { for _ in $(seq 1 600); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
COLUMNS_SUM="count(), sum(cityHash64(toString(tuple(execution_id, random_id, type, nsapp, repo_source, status, is_final,
  exit_code, error, error_category, error_signature, started_at, last_seen_at, finished_at, duration, ct_type, disk_size,
  core_count, ram_size, install_duration, os_type, os_version, pve_version, method, cpu_vendor, cpu_model, gpu_vendor,
  gpu_model, gpu_passthrough, ram_speed, events, repo_slug, has_arm, arch))))"

# start_clickhouse NAME: a server of its own; sets CH_URL and CH_PID.
start_clickhouse() {
  local http tcp dir="$WORK/$1"
  http=$(free_port); tcp=$(free_port)
  clickhouse_config "$dir" "$http" "$tcp"
  CH_LOG="$dir.log"
  clickhouse-server --config-file="$dir/config.xml" >"$CH_LOG" 2>&1 & CH_PID=$!; PIDS+=($CH_PID)
  CH_URL="http://127.0.0.1:$http"
  wait_http "$CH_URL/ping"
}
chq() { curl -fsS "$CH_URL" --data-binary "$1"; }
# alive: fails, with the end of the server's log, once this size's ClickHouse is gone.
alive() {
  [ -e "/proc/$CH_PID/stat" ] && [ "$(awk '{ print $3 }' "/proc/$CH_PID/stat" 2>/dev/null)" != Z ] && return 0
  local code=0
  wait "$CH_PID" 2>/dev/null || code=$?
  echo "ClickHouse (pid $CH_PID) is gone (exit status $code, 128 + N: killed by signal N);" \
    "the end of its log:" >&2
  tail -n 40 "$CH_LOG" >&2 || true
  exit 1
}
# merged: waits until ClickHouse runs no merge (at most 10 minutes).
merged() {
  for _ in $(seq 1 1200); do
    alive
    [ "$(chq "SELECT count() FROM system.merges")" = 0 ] && return 0
    sleep 0.5
  done
  echo "merges still running after 10 minutes" >&2
}
# migrate VERSION: one writer start against CH_URL (CLICKHOUSE_MIGRATE_TO=VERSION), until
# `schema_migrations` holds VERSION.
migrate() {
  local to=$1
  WRITER_SINK=clickhouse CLICKHOUSE_URL="$CH_URL" CLICKHOUSE_MIGRATE_TO="$to" SETTLE_INTERVAL_SECS=86400 ROLLUP_INTERVAL_SECS=0 \
    NATS_URL="nats://127.0.0.1:$NATS_PORT" OPS_ADDR="127.0.0.1:$(free_port)" LOG_LEVEL=warn \
    "$BIN/telemetry-writer" >>"$WORK/writer.log" 2>&1 & local pid=$!
  for _ in $(seq 1 36000); do
    alive
    [ "$(chq "SELECT count() FROM system.tables WHERE database = 'telemetry' AND name = 'schema_migrations'")" = 1 ] &&
      [ "$(chq "SELECT max(version) FROM telemetry.schema_migrations")" = "$to" ] && break
    sleep 0.1
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$CH_PID/stat"; }

NATS_PORT=$(free_port)
nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$NATS_PORT" >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.1; done

ROWS=()
SUMMARY=()
for EVENTS in $SIZES; do
  INSTALLS=$((EVENTS / 4))
  echo "== $EVENTS events ($INSTALLS installs) over $DAYS days" >&2
  start_clickhouse "ch-$EVENTS"
  migrate 3
  sed -e "s/{INSTALLS}/$INSTALLS/g; s/{EVENTS}/$EVENTS/g; s/{DAYS}/$DAYS/g; s/{OFFSET}/0/g" deploy/bench/web-seed.sql | chq "$(cat)"
  merged
  BEFORE=$(chq "SELECT $COLUMNS_SUM FROM telemetry.installs_final" | tr '\t' ' ')
  chq "CREATE DATABASE old"
  chq "CREATE VIEW old.events AS SELECT * FROM telemetry.events"
  chq "CREATE VIEW old.events_final AS SELECT * FROM telemetry.events FINAL"
  chq "$(chq "SHOW CREATE TABLE telemetry.installs_final FORMAT TSVRaw" | sed 's/VIEW telemetry\.installs_final/VIEW old.installs_final/')"
  MIGRATED=()
  for version in $(seq 4 "$LATEST"); do
    started=$(date +%s.%N)
    migrate "$version"
    took=$(echo "$(date +%s.%N) - $started" | bc)
    AFTER=$(chq "SELECT $COLUMNS_SUM FROM telemetry.installs_final" | tr '\t' ' ')
    OLD_NOW=$(chq "SELECT $COLUMNS_SUM FROM old.installs_final" | tr '\t' ' ')
    [ "$BEFORE" = "$AFTER" ] && [ "$BEFORE" = "$OLD_NOW" ] || { echo "before ($BEFORE) != after ($AFTER) / old ($OLD_NOW)" >&2; exit 1; }
    echo "migration to version $version: ${took}s; count, checksum before = after: $BEFORE" >&2
    MIGRATED+=("v${version}_s=$took")
    merged
  done
  # Version 6's rollups: a writer with the rollup job every second until its first run, which takes
  # every complete day of every pass and sums the spans (nothing changes meanwhile); its time and
  # ClickHouse's CPU.
  # The log of the last size's run must not count as this one's.
  rm -f "$WORK/roller.log"
  started=$(date +%s.%N); ticks=$(cpu_ticks)
  WRITER_SINK=clickhouse CLICKHOUSE_URL="$CH_URL" SETTLE_INTERVAL_SECS=86400 ROLLUP_INTERVAL_SECS=1 \
    NATS_URL="nats://127.0.0.1:$NATS_PORT" OPS_ADDR="127.0.0.1:$(free_port)" LOG_LEVEL=info LOG_FORMAT=json \
    "$BIN/telemetry-writer" >"$WORK/roller.log" 2>&1 & roller=$!
  for _ in $(seq 1 36000); do alive; grep -qs "days of passes taken" "$WORK/roller.log" && break; sleep 0.2; done
  kill "$roller"; wait "$roller" 2>/dev/null || true
  took=$(echo "$(date +%s.%N) - $started" | bc)
  cpu=$(echo "scale=3; ($(cpu_ticks) - $ticks) / $(getconf CLK_TCK)" | bc)
  expected=$(grep "days of passes taken" "$WORK/roller.log" | head -1 | grep -o '"\(listed\|dropped\|spans\)":[0-9]*' | tr -d '"' | tr ':\n' '= ')
  echo "rollups ($expected): ${took}s, ClickHouse CPU ${cpu}s" >&2
  MIGRATED+=("rollups_s=$took rollups_ch_cpu_s=$cpu ${expected// /,}")
  SUMMARY+=("events=$EVENTS migration ${MIGRATED[*]} installs_before_after=${BEFORE%% *} checksum_equal=yes")

  NEW_PORT=$(free_port); ROWS_PORT=$(free_port); OLD_PORT=$(free_port)
  for triple in "telemetry $NEW_PORT true" "telemetry $ROWS_PORT false" "old $OLD_PORT true"; do
    set -- $triple
    WEB_LISTEN_ADDR="127.0.0.1:$2" WEB_OPS_ADDR="127.0.0.1:$(free_port)" CLICKHOUSE_URL="$CH_URL" CLICKHOUSE_DATABASE="$1" \
      ROLLUP_READS="$3" \
      NATS_URL="nats://127.0.0.1:$NATS_PORT" CACHE_WARMUP=false CACHE_TTL_SECS=3600 CACHE_MAX_STALE_SECS=7200 \
      QUERY_TIMEOUT_SECS=600 REQUEST_TIMEOUT_MS=900000 LOG_LEVEL=warn \
      "$BIN/telemetry-web" >"$WORK/web-$2.log" 2>&1 & PIDS+=($!)
    wait_http "http://127.0.0.1:$2/readyz"
  done
  APP=$(chq "SELECT nsapp FROM telemetry.installs_final GROUP BY nsapp ORDER BY count() DESC LIMIT 1")
  VIEWS=()
  for d in 1 30 365; do
    VIEWS+=("/api/dashboard?days=$d" "/api/errors?days=$d" "/api/scripts?days=$d" "/api/apps/$APP?days=$d"
            "/api/records?days=$d&status=failed&sort=-nsapp&limit=50"
            "/api/v2/records.csv?days=$([ $d = 1 ] && echo today || echo $d)&status=failed&sort=duration")
  done
  VIEWS+=("/api/scripts?days=0")
  for view in "${VIEWS[@]}"; do
    times=()
    ports=("$NEW_PORT" "$ROWS_PORT")
    [ "$EVENTS" -le "$OLD_MAX" ] && ports+=("$OLD_PORT")
    for port in "${ports[@]}"; do
      out=$(curl -fsS -o "$WORK/body" -D "$WORK/h" -w '%{time_total}' "http://127.0.0.1:$port$view")
      grep -qi '^x-cache: hit' "$WORK/h" && { echo "a cache hit for $view" >&2; exit 1; }
      times+=("$out")
    done
    gain=$(echo "scale=1; ${times[1]} / ${times[0]}" | bc)
    if [ "${#times[@]}" = 3 ]; then
      ratio=$(echo "scale=1; ${times[2]} / ${times[0]}" | bc)
      ROWS+=("$(printf '%-9s %-72s %8.3f %8.3f %7s %8.3f %7s' "$EVENTS" "$view" "${times[0]}" "${times[1]}" "$gain" "${times[2]}" "$ratio")")
    else
      ROWS+=("$(printf '%-9s %-72s %8.3f %8.3f %7s %8s %7s' "$EVENTS" "$view" "${times[0]}" "${times[1]}" "$gain" - -)")
    fi
    echo "${ROWS[-1]}" >&2
  done
  kill "${PIDS[@]:1}" 2>/dev/null || true
  wait "${PIDS[@]:1}" 2>/dev/null || true
  PIDS=("${PIDS[0]}")
  rm -rf "$WORK/ch-$EVENTS"
done

echo "== ClickHouse CPU per 1,000 inserted events ($CPU_EVENTS events through the writer's sink)" >&2
start_clickhouse cpu
CPU=()
per_1k() { echo "scale=4; $1 / $(getconf CLK_TCK) / ($CPU_EVENTS / 1000)" | bc; }
for version in 3 "$LATEST"; do
  chq "DROP DATABASE IF EXISTS bench_raw"
  before=$(cpu_ticks)
  CLICKHOUSE_MIGRATE_TO=$version BATCH_SIZE=4000 \
    "$BIN/examples/bench" ch-raw "$CH_URL" "$CPU_EVENTS" 4000 >&2
  merged
  ticks=$(( $(cpu_ticks) - before ))
  CPU+=("v$version=$(per_1k "$ticks")")
  echo "schema version $version: ClickHouse ${ticks} ticks for $CPU_EVENTS events" >&2
  if [ "$version" != 3 ]; then
    # Since version 4 an install also costs its settle (once, after SETTLE_LAG_SECS): a writer settles
    # everything just inserted, and ClickHouse's CPU meanwhile is counted too.
    inserted=$(chq "SELECT toUInt32(now())")
    before=$(cpu_ticks)
    WRITER_SINK=clickhouse CLICKHOUSE_URL="$CH_URL" CLICKHOUSE_DATABASE=bench_raw SETTLE_INTERVAL_SECS=1 \
      SETTLE_LAG_SECS=1 NATS_URL="nats://127.0.0.1:$NATS_PORT" OPS_ADDR="127.0.0.1:$(free_port)" LOG_LEVEL=warn \
      "$BIN/telemetry-writer" >>"$WORK/writer.log" 2>&1 & settler=$!
    for _ in $(seq 1 36000); do
      [ "$(chq "SELECT toUInt32(max(watermark)) > $inserted FROM bench_raw.settle_watermark")" = 1 ] && break
      sleep 0.1
    done
    kill "$settler"; wait "$settler" 2>/dev/null || true
    merged
    ticks=$(( $(cpu_ticks) - before ))
    CPU+=("v${version}_settle=$(per_1k "$ticks")")
    echo "schema version $version: settling them took ClickHouse ${ticks} ticks" >&2
  fi
done

echo "views benchmark ($(nproc) cores, release, all servers co-located; ClickHouse $(chq 'SELECT version()'))"
printf '%-9s %-72s %8s %8s %7s %8s %7s\n' events view new_s rows_s rows/new old_s old/new
printf '%s\n' "${ROWS[@]}"
printf '%s\n' "${SUMMARY[@]}"
echo "clickhouse_cpu_s_per_1k_events ${CPU[*]}"
