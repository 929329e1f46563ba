#!/usr/bin/env bash
# Writer figures (issue 3), measured side by side on this machine, release build, every server on
# loopback with its data in a temporary dir:
#   1. ClickHouse sink rate from a stream pre-filled by telemetry-fill with N events (N/4 installs of 4
#      events) vs the raw `clickhouse` crate insert rate of the same rows (same tables, same batch size)
#      in the same run;
#   2. PocketBase sink rate vs PocketBase's own /api/batch create rate of the same install records;
#      and (stage pbslow, on a PocketBase of its own whose batch API stays off) the sink's rate without
#      PB_ALLOW_SETTINGS_CHANGES: one request per record;
#   3. freshness at RATE events/s through telemetry-ingest (telemetry-fresh): p99 from the 202 to the
#      install being visible in ClickHouse (its event in `events`; every probed install checked in
#      installs_final at the end).
# Usage: deploy/bench/writer.sh            N=1000000 PB_N=40000 RATE=5000 SECS=20 BATCH_SIZE=4000 by env
#        (N and PB_N are rounded down to whole installs of 4 events);
#        STAGES="ch pb pbslow fresh" picks stages. Freshness writes to its own database `fresh`, so the merges of
#        the 1M-row stage do not weigh on it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
N=$((${N:-1000000} / 4 * 4))
PB_N=$((${PB_N:-40000} / 4 * 4))
RATE=${RATE:-5000}
SECS=${SECS:-20}
export BATCH_SIZE=${BATCH_SIZE:-4000}
PB_BATCH=${PB_BATCH:-200}
STAGES=${STAGES:-ch pb fresh}
has() { [[ " $STAGES " == *" $1 "* ]]; }
CH_RAW="rate=0"; CH_SINK="rate=0"; PB_RAW="rate=0"; PB_SINK="rate=0"; PB_SLOW="rate=0"; FRESH=""; STORED=0

ensure_python_tools
ensure_clickhouse
PATH="$VENV/bin:$PATH"
cargo build --release --locked -q -p writer -p ingest -p traffic --bins
cargo build --release --locked -q -p writer --example bench
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() { main_shell || return 0; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_http() { for _ in $(seq 1 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
value() { sed -E "s/.* $1=([^ ]+).*/\1/"; }

start_nats() { # start_nats DIR PORT
  nats-server -js -sd "$1" -a 127.0.0.1 -p "$2" >/dev/null 2>&1 & PIDS+=($!)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0; sleep 0.1; done
}

CH_HTTP=$(free_port); CH_TCP=$(free_port)
CH="$WORK/clickhouse"; clickhouse_config "$CH" "$CH_HTTP" "$CH_TCP"
clickhouse-server --config-file="$CH/config.xml" >"$WORK/ch.log" 2>&1 & PIDS+=($!)
CH_URL="http://127.0.0.1:$CH_HTTP"
wait_http "$CH_URL/ping"

PB_PORT=$(free_port); PB_URL="http://127.0.0.1:$PB_PORT"
PB_EMAIL=bench@example.com; PB_PASSWORD=benchbenchbench
pocketbase superuser upsert "$PB_EMAIL" "$PB_PASSWORD" --dir "$WORK/pb" >/dev/null
pocketbase serve --http "127.0.0.1:$PB_PORT" --dir "$WORK/pb" >/dev/null 2>&1 & PIDS+=($!)
wait_http "$PB_URL/api/health"

if has ch; then
echo "== ClickHouse: $N events (batch $BATCH_SIZE)" >&2
NATS_PORT=$(free_port); start_nats "$WORK/nats1" "$NATS_PORT"
"$BIN/telemetry-fill" --nats-url "nats://127.0.0.1:$NATS_PORT" installs $((N / 4)) --shape full >/dev/null
CH_RAW=$("$BIN/examples/bench" ch-raw "$CH_URL" "$N" "$BATCH_SIZE"); echo "$CH_RAW" >&2
CH_SINK=$("$BIN/examples/bench" ch-sink "nats://127.0.0.1:$NATS_PORT" "$CH_URL" "$N"); echo "$CH_SINK" >&2
STORED=$(curl -fsS "$CH_URL" --data-binary "SELECT count() FROM telemetry.events_final")
fi

if has pb; then
echo "== PocketBase: $PB_N events ($((PB_N / 4)) installs, $PB_BATCH requests per batch)" >&2
NATS2_PORT=$(free_port); start_nats "$WORK/nats2" "$NATS2_PORT"
"$BIN/telemetry-fill" --nats-url "nats://127.0.0.1:$NATS2_PORT" installs $((PB_N / 4)) --shape full >/dev/null
PB_RAW=$("$BIN/examples/bench" pb-raw "$PB_URL" "$PB_EMAIL" "$PB_PASSWORD" "$PB_N" "$PB_BATCH" | sed -n 1p); echo "$PB_RAW" >&2
PB_SINK=$(PB_BATCH_REQUESTS=$PB_BATCH PB_ALLOW_SETTINGS_CHANGES=true "$BIN/examples/bench" pb-sink "nats://127.0.0.1:$NATS2_PORT" "$PB_URL" "$PB_EMAIL" "$PB_PASSWORD" "$PB_N"); echo "$PB_SINK" >&2
fi

if has pbslow; then
echo "== PocketBase without consent to enable the batch API: $PB_N events, one request per record" >&2
SLOW_PORT=$(free_port); SLOW_URL="http://127.0.0.1:$SLOW_PORT"
pocketbase superuser upsert "$PB_EMAIL" "$PB_PASSWORD" --dir "$WORK/pbslow" >/dev/null
pocketbase serve --http "127.0.0.1:$SLOW_PORT" --dir "$WORK/pbslow" >/dev/null 2>&1 & PIDS+=($!)
wait_http "$SLOW_URL/api/health"
NATS4_PORT=$(free_port); start_nats "$WORK/nats4" "$NATS4_PORT"
"$BIN/telemetry-fill" --nats-url "nats://127.0.0.1:$NATS4_PORT" installs $((PB_N / 4)) --shape full >/dev/null
PB_SLOW=$(PB_ALLOW_SETTINGS_CHANGES=false "$BIN/examples/bench" pb-sink "nats://127.0.0.1:$NATS4_PORT" "$SLOW_URL" "$PB_EMAIL" "$PB_PASSWORD" "$PB_N"); echo "$PB_SLOW" >&2
fi

if has fresh; then
echo "== freshness: $RATE events/s for ${SECS}s through telemetry-ingest" >&2
NATS3_PORT=$(free_port); start_nats "$WORK/nats3" "$NATS3_PORT"
INGEST_PORT=$(free_port); OPS_PORT=$(free_port)
RATE_LIMIT_RPM=0 LISTEN_ADDR="127.0.0.1:$INGEST_PORT" OPS_ADDR="127.0.0.1:$(free_port)" NATS_URL="nats://127.0.0.1:$NATS3_PORT" LOG_LEVEL=warn \
  "$BIN/telemetry-ingest" 2>"$WORK/ingest.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$INGEST_PORT/readyz"
WRITER_SINK=clickhouse CLICKHOUSE_URL="$CH_URL" CLICKHOUSE_DATABASE=fresh NATS_URL="nats://127.0.0.1:$NATS3_PORT" \
  WRITER_CONSUMER_PREFIX=fresh OPS_ADDR="127.0.0.1:$OPS_PORT" BATCH_SIZE=2000 BATCH_MAX_WAIT_MS=${FRESH_WAIT_MS:-100} LOG_LEVEL=warn \
  "$BIN/telemetry-writer" 2>"$WORK/writer.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$OPS_PORT/readyz"
FRESH=$("$BIN/telemetry-fresh" "http://127.0.0.1:$INGEST_PORT/telemetry" "$CH_URL" fresh "$RATE" "$SECS"); echo "$FRESH" >&2
fi

R_CH_RAW=$(echo "$CH_RAW" | value rate); R_CH_SINK=$(echo "$CH_SINK" | value rate)
R_PB_RAW=$(echo "$PB_RAW" | value rate); R_PB_SINK=$(echo "$PB_SINK" | value rate); R_PB_SLOW=$(echo "$PB_SLOW" | value rate)
echo
echo "writer benchmark ($(nproc) cores, release, all servers co-located; ClickHouse $(curl -fsS "$CH_URL" --data-binary 'SELECT version()'))"
printf '%-52s %12s\n' "events pre-filled in the stream (N)" "$N"
printf '%-52s %12s\n' "raw clickhouse crate insert (events/s)" "$R_CH_RAW"
printf '%-52s %12s\n' "ClickHouse sink from the stream (events/s)" "$R_CH_SINK"
printf '%-52s %12s\n' "events in telemetry.events_final after the run" "$STORED"
printf '%-52s %12.2f   (aim >= 0.50)\n' "ClickHouse sink / raw" "$(awk "BEGIN {print $R_CH_RAW ? $R_CH_SINK / $R_CH_RAW : 0}")"
printf '%-52s %12s\n' "PocketBase batch create, same records (events/s)" "$R_PB_RAW"
printf '%-52s %12s\n' "PocketBase sink from the stream (events/s)" "$R_PB_SINK"
printf '%-52s %12.2f   (aim >= 0.80)\n' "PocketBase sink / batch create" "$(awk "BEGIN {print $R_PB_RAW ? $R_PB_SINK / $R_PB_RAW : 0}")"
printf '%-52s %12s\n' "PocketBase sink, one request per record (events/s)" "$R_PB_SLOW"
printf '%-52s %12s\n' "ingest accepted / sent at $RATE/s" "$(echo "$FRESH" | value accepted) / $(echo "$FRESH" | value sent)"
printf '%-52s %12s\n' "freshness p50 ms (202 -> installs_final)" "$(echo "$FRESH" | value p50_ms)"
printf '%-52s %12s   (aim <= 2000)\n' "freshness p99 ms (202 -> installs_final)" "$(echo "$FRESH" | value p99_ms)"
printf '%-52s %12s\n' "freshness samples / never seen" "$(echo "$FRESH" | value samples) / $(echo "$FRESH" | value missing)"
