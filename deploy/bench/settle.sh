#!/usr/bin/env bash
# What one settle of the writer costs ClickHouse as history grows: seeds HISTORY installs (4 events
# each, over DAYS days, deploy/bench/web-seed.sql) and settles them all, then runs the writer's settle
# job (every second, lag 1 s) for WINDOW seconds while live traffic arrives straight into `events`:
# RATE new installs a second (an `installing` event) and, 10 s later, their final (so each live install
# is settled twice, as most are). It prints, per settle, the writer's ClickHouse CPU (query log,
# user + system), rows read and the longest query.
# Side by side: BASELINE=path/to/telemetry-writer runs that binary in turn with this tree's, ROUNDS times
# (baseline first), against the same database, and prints the ratio of their CPU per settle.
# Usage: deploy/bench/settle.sh    HISTORY=1000000 DAYS=365 RATE=200 WINDOW=30 ROUNDS=2 BASELINE= by
# env; NO_BUILD=1 skips the build (release, CARGO_TARGET_DIR honoured).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
ensure_python_tools
ensure_clickhouse
PATH="$VENV/bin:$PATH"
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -q -p writer --bins
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/telemetry-writer"
BASELINE=${BASELINE:-}
HISTORY=${HISTORY:-1000000}; DAYS=${DAYS:-365}; RATE=${RATE:-200}; WINDOW=${WINDOW:-30}; ROUNDS=${ROUNDS:-2}
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || { echo "BASELINE is not an executable: $BASELINE" >&2; exit 2; }
WORK=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
wait_http() { for _ in $(seq 1 600); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
CH_HTTP=$(free_port); CH_TCP=$(free_port); CH="$WORK/clickhouse"; WRITER_PASSWORD=bench-writer-$RANDOM$RANDOM
CLICKHOUSE_QUERY_LOG=1 clickhouse_config "$CH" "$CH_HTTP" "$CH_TCP" "$WRITER_PASSWORD" "bench-web-$RANDOM"
clickhouse-server --config-file="$CH/config.xml" >"$WORK/ch.log" 2>&1 & PIDS+=($!)
CH_URL="http://127.0.0.1:$CH_HTTP"; wait_http "$CH_URL/ping"
chq() { curl -sS --fail-with-body "$CH_URL" --data-binary "$1"; }
NATS_PORT=$(free_port)
nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$NATS_PORT" >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.1; done
# writer BINARY [ENV=VALUE ...]: starts it in the background as ClickHouse user `writer` (pid in WP) and
# waits until it is ready (its schema migrated).
writer() {
  local bin=$1 ops; shift; ops=$(free_port)
  env CLICKHOUSE_USER=writer CLICKHOUSE_PASSWORD="$WRITER_PASSWORD" WRITER_SINK=clickhouse CLICKHOUSE_URL="$CH_URL" \
    NATS_URL="nats://127.0.0.1:$NATS_PORT" OPS_ADDR="127.0.0.1:$ops" ROLLUP_INTERVAL_SECS=0 LOG_LEVEL=warn \
    "$@" "$bin" >>"$WORK/writer.log" 2>&1 & WP=$!; PIDS+=($WP)
  wait_http "http://127.0.0.1:$ops/readyz"
}
stop_writer() { kill "$WP"; wait "$WP" 2>/dev/null || true; }
wait_settled() { # until a recorded watermark passes unix second $1
  for _ in $(seq 1 36000); do [ "$(chq "SELECT toUInt32(max(watermark)) > $1 FROM telemetry.settle_watermark")" = 1 ] && return 0; sleep 0.5; done
  echo "the settle did not pass $1" >&2; exit 1
}
quiet() { for _ in $(seq 1 600); do [ "$(chq "SELECT count() FROM system.merges")" = 0 ] && return 0; sleep 1; done; }

echo "seeding $HISTORY installs over $DAYS days and settling them (takes a while)" >&2
writer "$BIN" SETTLE_INTERVAL_SECS=3600; stop_writer
sed -e "s/{INSTALLS}/$HISTORY/g; s/{EVENTS}/$((HISTORY * 4))/g; s/{DAYS}/$DAYS/g; s/{OFFSET}/0/g" deploy/bench/web-seed.sql | curl -fsS "$CH_URL" --data-binary @-
SEED_END=$(chq "SELECT toUInt32(now())")
writer "$BIN" SETTLE_INTERVAL_SECS=1 SETTLE_LAG_SECS=1
wait_settled "$SEED_END"; stop_writer; quiet
echo "history: $(chq "SELECT count() FROM telemetry.installs_settled") settled rows, $(chq "SELECT count() FROM telemetry.events") events" >&2

# One second of live traffic, tick $1: `installing` for installs [tick*RATE, (tick+1)*RATE), the final
# of the installs 10 ticks older. Received now; event ids as the edge makes them (UUIDv7 layout). Their
# ids sort among the history's, as the scripts' random ids do (a lookup by id cannot skip old parts).
live_tick() {
  local n=$RATE a=$(($1 * RATE)) b=0
  [ "$1" -lt 10 ] || { n=$((2 * RATE)); b=$((($1 - 11) * RATE)); }
  chq "INSERT INTO telemetry.events (event_id, received_at, received_ms, execution_id, random_id, type, nsapp, status, repo_source, exit_code, install_duration)
SELECT toUUID(concat(substring(ms_hex, 1, 8), '-', substring(ms_hex, 9, 4), '-7', substring(rnd, 1, 3), '-8',
         substring(rnd, 4, 3), '-', substring(rnd, 5, 12))),
       toDateTime(intDiv(ms, 1000)), ms, id, id, 'lxc', 'app', status, 'ProxmoxVE',
       if(status = 'installing', NULL, toUInt8(0)), if(status = 'installing', NULL, toUInt32(60))
FROM (
  SELECT toUInt64(toUnixTimestamp(now())) * 1000 + number AS ms, lower(hex(ms)) AS ms_hex,
         lower(hex(bitOr(intHash64(number + $1 * 1000003), toUInt64(9223372036854775808)))) AS rnd,
         concat('seed-', toString(number + if(number < $RATE, toUInt64($a), toUInt64($b))), '-live') AS id,
         if(number < $RATE, 'installing', 'success') AS status
  FROM numbers($n))"
}
TICK=0
# A query's CPU seconds (user + system, every thread), as a query_log expression.
QUERY_CPU="arraySum(arrayFilter((v, n) -> n IN ('UserTimeMicroseconds', 'SystemTimeMicroseconds'), ProfileEvents.Values, ProfileEvents.Names)) / 1e6"
# measure NAME BINARY: one window; prints "settles cpu_ms_per_settle read_rows_per_settle max_ms".
measure() {
  local name=$1 bin=$2 began ended
  began=$(chq "SELECT toUInt32(now())")
  writer "$bin" SETTLE_INTERVAL_SECS=1 SETTLE_LAG_SECS=1
  # The writer's start-up marking pass (a full read, once per start) comes before its first settle and
  # stays out of the window.
  wait_settled "$began"
  began=$(chq "SELECT toUInt32(now())")
  for _ in $(seq 1 "$WINDOW"); do live_tick "$TICK"; TICK=$((TICK + 1)); sleep 1; done
  ended=$(chq "SELECT toUInt32(now())")
  stop_writer
  chq "SYSTEM FLUSH LOGS"
  local settles
  settles=$(chq "SELECT count() FROM telemetry.settle_watermark WHERE watermark >= toDateTime($began) - 2 AND watermark < toDateTime($ended) - 1")
  chq "SELECT '$name', $settles,
      round(sum($QUERY_CPU) * 1000 / $settles, 1),
      round(sum(read_rows) / $settles), max(query_duration_ms)
    FROM system.query_log WHERE type = 2 AND user = 'writer'
      AND event_time >= toDateTime($began) AND event_time < toDateTime($ended) FORMAT TSV"
  # The writer's statements by their first words, costliest first (to stderr).
  chq "SELECT '  $name', count(), round(sum($QUERY_CPU) * 1000 / $settles, 1) AS cpu_ms_per_settle,
      round(sum(read_rows) / $settles), substring(replaceRegexpAll(replaceRegexpAll(query, '[[:space:]]+', ' '), '[0-9]+', 'N'), 1, 110)
    FROM system.query_log WHERE type = 2 AND user = 'writer'
      AND event_time >= toDateTime($began) AND event_time < toDateTime($ended)
    GROUP BY substring(replaceRegexpAll(replaceRegexpAll(query, '[[:space:]]+', ' '), '[0-9]+', 'N'), 1, 110) ORDER BY cpu_ms_per_settle DESC LIMIT 8 FORMAT TSV" >&2
}
printf 'writer\tsettles\tcpu_ms_per_settle\tread_rows_per_settle\tmax_query_ms\n'
for r in $(seq 1 "$ROUNDS"); do
  [ -z "$BASELINE" ] || measure baseline "$BASELINE" | tee -a "$WORK/results"
  measure this "$BIN" | tee -a "$WORK/results"
done
if [ -n "$BASELINE" ]; then
  awk -F'\t' '{cpu[$1]+=$3; n[$1]++} END {b=cpu["baseline"]/n["baseline"]; t=cpu["this"]/n["this"];
    printf "cpu per settle: baseline %.1f ms, this %.1f ms, this / baseline %.3f\n", b, t, t / b}' "$WORK/results"
fi
