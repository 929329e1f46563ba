#!/usr/bin/env bash
# Are reads of installs_final consistent while the writer's settle job runs? Release build, on loopback:
# telemetry-loadgen keeps RATE installing events/s flowing through ingest, NATS and the writer (settle
# every SETTLE_INTERVAL_SECS, default 5) for the whole run; in ROUNDS rounds, telemetry-fresh posts 500
# final installs (20/s) and then, for 15 s, two readers count the probe's installs so far, whose number
# no longer changes: plain reads of `installs_final` back to back, and telemetry-web with its cache off
# (`/api/apps/fresh?days=1`, `total_installs`; the web computes a view again when a settle watermark was
# recorded meanwhile). Every read must show all of them. Prints, per round, the reads and those that
# showed a different number (with the watermark each direct read saw), then one line:
#   RESULT reads=N wrong=N web_reads=N web_wrong=N
# A wrong read is one whose branches of `installs_final` saw different settle watermarks (see
# writer/README.md, "Reads during a settle").
# Usage: deploy/bench/consistency.sh      RATE=1000 ROUNDS=3 by env; NO_BUILD=1 skips the build.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
RATE=${RATE:-1000}
ROUNDS=${ROUNDS:-3}
ensure_python_tools
ensure_clickhouse
PATH="$VENV/bin:$PATH"
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -q --bins -p ingest -p writer -p web -p traffic
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d); PIDS=()
cleanup() { main_shell || return 0; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
wait_http() { for _ in $(seq 1 600); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }

CH_HTTP=$(free_port); CH_TCP=$(free_port); CH="$WORK/clickhouse"
clickhouse_config "$CH" "$CH_HTTP" "$CH_TCP"
clickhouse-server --config-file="$CH/config.xml" >"$WORK/ch.log" 2>&1 & PIDS+=($!)
CH_URL="http://127.0.0.1:$CH_HTTP"; wait_http "$CH_URL/ping"
chq() { curl -fsS "$CH_URL/?enable_optimize_predicate_expression=1" --data-binary "$1"; }
NATS_PORT=$(free_port); NATS_MON=$(free_port)
nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" >"$WORK/nats.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$NATS_MON/healthz"
export NATS_URL="nats://127.0.0.1:$NATS_PORT" CLICKHOUSE_URL="$CH_URL" LOG_LEVEL=warn
INGEST_PORT=$(free_port); INGEST="http://127.0.0.1:$INGEST_PORT"
LISTEN_ADDR="127.0.0.1:$INGEST_PORT" OPS_ADDR="127.0.0.1:$(free_port)" "$BIN/telemetry-ingest" >"$WORK/ingest.log" 2>&1 & PIDS+=($!)
wait_http "$INGEST/readyz"
WRITER_OPS=$(free_port)
WRITER_SINK=clickhouse OPS_ADDR="127.0.0.1:$WRITER_OPS" "$BIN/telemetry-writer" >"$WORK/writer.log" 2>&1 & PIDS+=($!)
wait_http "http://127.0.0.1:$WRITER_OPS/readyz"
WEB_PORT=$(free_port); WEB="http://127.0.0.1:$WEB_PORT"
WEB_OPS=$(free_port)
WEB_LISTEN_ADDR="127.0.0.1:$WEB_PORT" WEB_OPS_ADDR="127.0.0.1:$WEB_OPS" ENABLE_CACHE=false \
  "$BIN/telemetry-web" >"$WORK/web.log" 2>&1 & PIDS+=($!)
wait_http "$WEB/readyz"

LOAD_SECS=$(( ROUNDS * 45 + 10 ))
"$BIN/telemetry-loadgen" --forwarded-for "$INGEST/telemetry" "$RATE" "$LOAD_SECS" 256 >"$WORK/loadgen.out" 2>&1 & PIDS+=($!)
READS=0 WRONG=0 WEB_READS=0 WEB_WRONG=0
for round in $(seq 1 "$ROUNDS"); do
  "$BIN/telemetry-fresh" --every 1 "$INGEST/telemetry" "$CH_URL" telemetry 20 25 | tail -1 >&2
  EXPECTED=$(chq "SELECT uniqExact(execution_id) FROM telemetry.events WHERE nsapp = 'fresh'")
  : >"$WORK/reads"; : >"$WORK/web-reads"
  end=$(( SECONDS + 15 ))
  ( while [ $SECONDS -lt $end ]; do
      curl -fsS "$WEB/api/apps/fresh?days=1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["total_installs"])' || echo error
    done >>"$WORK/web-reads" ) &
  web_reader=$!
  while [ $SECONDS -lt $end ]; do
    chq "SELECT count(), (SELECT toUInt32(max(watermark)) FROM telemetry.settle_watermark) FROM telemetry.installs_final
         WHERE nsapp = 'fresh' FORMAT TSV" >>"$WORK/reads"
  done
  wait "$web_reader"
  n=$(wc -l <"$WORK/reads"); bad=$(awk -v e="$EXPECTED" '$1 != e' "$WORK/reads" | wc -l)
  wn=$(wc -l <"$WORK/web-reads"); wbad=$(awk -v e="$EXPECTED" '$1 != e' "$WORK/web-reads" | wc -l)
  echo "round $round: $EXPECTED probe installs; $n direct reads, $bad showed another number;" \
    "$wn web reads, $wbad showed another number" >&2
  awk -v e="$EXPECTED" '$1 != e { print "  direct read " NR ": " $1 " installs at watermark " $2 }' "$WORK/reads" >&2
  awk -v e="$EXPECTED" '$1 != e { print "  web read " NR ": " $1 }' "$WORK/web-reads" >&2
  READS=$((READS + n)) WRONG=$((WRONG + bad)) WEB_READS=$((WEB_READS + wn)) WEB_WRONG=$((WEB_WRONG + wbad))
done
echo "web re-computations after a watermark moved: $(curl -fsS "http://127.0.0.1:$WEB_OPS/metrics" | awk '/^telemetry_web_settle_rereads_total/ { print $2 }')" >&2
echo "RESULT reads=$READS wrong=$WRONG web_reads=$WEB_READS web_wrong=$WEB_WRONG"
