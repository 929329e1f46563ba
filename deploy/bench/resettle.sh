#!/usr/bin/env bash
# What reads of `installs_final` cost when installs have been settled twice (marked in
# `installs_resettled`), as a live install whose events span two settles is, against settled once.
# Seeds INSTALLS installs (4 events each, over DAYS days) with deploy/bench/web-seed.sql, lets a writer
# settle them all, then times two reads (median of 5, ClickHouse's own `elapsed` and rows read): the
# installs of the last day per status, and two installs by id. Then it settles a FRACTION of the
# installs a second time (a copy of their rows, marked) and times the same reads again.
# MIGRATE_TO=6 keeps the schema at version 6 (the view before version 7), the baseline of a side-by-side
# run; 0 (the default) is the newest.
# Usage: deploy/bench/resettle.sh     INSTALLS=250000 DAYS=365 FRACTION=1 MIGRATE_TO=0 by env; NO_BUILD=1
# skips the build (release, CARGO_TARGET_DIR honoured).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
ensure_python_tools
ensure_clickhouse
PATH="$VENV/bin:$PATH"
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -q -p writer --bins
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
MIGRATE_TO=${MIGRATE_TO:-0}
INSTALLS=${INSTALLS:-250000}; EVENTS=$((INSTALLS*4)); DAYS=${DAYS:-365}
WORK=$(mktemp -d); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
wait_http() { for _ in $(seq 1 600); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
CH_HTTP=$(free_port); CH_TCP=$(free_port); CH="$WORK/clickhouse"; clickhouse_config "$CH" "$CH_HTTP" "$CH_TCP"
clickhouse-server --config-file="$CH/config.xml" >"$WORK/ch.log" 2>&1 & PIDS+=($!)
CH_URL="http://127.0.0.1:$CH_HTTP"; wait_http "$CH_URL/ping"
chq() { curl -fsS "$CH_URL" --data-binary "$1"; }
NATS_PORT=$(free_port)
nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$NATS_PORT" >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.1; done
WRITER_OPS=$(free_port)
WRITER_SINK=clickhouse CLICKHOUSE_MIGRATE_TO="$MIGRATE_TO" CLICKHOUSE_URL="$CH_URL" NATS_URL="nats://127.0.0.1:$NATS_PORT" OPS_ADDR="127.0.0.1:$WRITER_OPS" \
  ROLLUP_INTERVAL_SECS=0 LOG_LEVEL=warn "$BIN/telemetry-writer" >"$WORK/writer.log" 2>&1 & WP=$!
wait_http "http://127.0.0.1:$WRITER_OPS/readyz"; kill $WP; wait $WP 2>/dev/null || true
sed -e "s/{INSTALLS}/$INSTALLS/g; s/{EVENTS}/$EVENTS/g; s/{DAYS}/$DAYS/g; s/{OFFSET}/0/g" deploy/bench/web-seed.sql | curl -fsS "$CH_URL" --data-binary @-
SEED_END=$(chq "SELECT toUInt32(now())")
WRITER_SINK=clickhouse CLICKHOUSE_MIGRATE_TO="$MIGRATE_TO" CLICKHOUSE_URL="$CH_URL" NATS_URL="nats://127.0.0.1:$NATS_PORT" OPS_ADDR="127.0.0.1:$(free_port)" \
  ROLLUP_INTERVAL_SECS=0 SETTLE_INTERVAL_SECS=1 SETTLE_LAG_SECS=1 LOG_LEVEL=warn "$BIN/telemetry-writer" >>"$WORK/writer.log" 2>&1 & WP=$!
for _ in $(seq 1 36000); do [ "$(chq "SELECT toUInt32(max(watermark)) > $SEED_END FROM telemetry.settle_watermark")" = 1 ] && break; sleep 0.5; done
kill $WP; wait $WP 2>/dev/null || true
for _ in $(seq 1 600); do [ "$(chq "SELECT count() FROM system.merges")" = 0 ] && break; sleep 1; done
Q1="SELECT status, count() FROM telemetry.installs_final WHERE started_at >= toDateTime(now() - 86400) GROUP BY status"
Q2="SELECT count() FROM telemetry.installs_final WHERE execution_id IN ('seed-5', 'seed-77')"
time_q() { # median of 5 runs, seconds, and rows read
  for i in 1 2 3 4 5; do curl -fsS "$CH_URL/?enable_optimize_predicate_expression=1" --data-binary "$1 FORMAT JSON" | python3 -c 'import json,sys; d=json.load(sys.stdin)["statistics"]; print(d["elapsed"], d["rows_read"])'; done | sort -n | sed -n 3p
}
echo "settled once: installs=$(chq "SELECT count() FROM telemetry.installs_final") resettled=$(chq "SELECT count() FROM telemetry.installs_resettled")"
echo "  day view: $(time_q "$Q1")   by id: $(time_q "$Q2")"
FRACTION=${FRACTION:-1}
chq "INSERT INTO telemetry.installs_settled SELECT * FROM telemetry.installs_settled WHERE cityHash64(execution_id) % 100 < $FRACTION * 100"
chq "INSERT INTO telemetry.installs_resettled SELECT execution_id FROM telemetry.installs_settled WHERE cityHash64(execution_id) % 100 < $FRACTION * 100 GROUP BY execution_id"
for _ in $(seq 1 600); do [ "$(chq "SELECT count() FROM system.merges")" = 0 ] && break; sleep 1; done
echo "settled twice ($FRACTION): installs=$(chq "SELECT count() FROM telemetry.installs_final") resettled=$(chq "SELECT count() FROM telemetry.installs_resettled")"
echo "  day view: $(time_q "$Q1")   by id: $(time_q "$Q2")"
