#!/usr/bin/env bash
# End-to-end capacity of the fleet on this machine, release build, everything co-located on loopback:
# telemetry-simulate → telemetry-ingest → NATS JetStream → telemetry-writer (ClickHouse sink) → ClickHouse,
# with telemetry-aggregator following the stream and telemetry-web serving a viewer who reloads
# /api/dashboard every second. For each offered rate in RATES (requests/s, STEP_SECS each) it prints:
#   - accepted events/s and the share shed (429 + 503);
#   - ingest latency p50/p99 as the simulator saw it, and (loadgen only) the p99 from each request's
#     departure, without its wait for a free connection (ingest_service_p99_ms: the edge's share);
#   - freshness p50/p99: a probe posts PROBE_RATE extra installs/s and times the 202 → install visible in
#     ClickHouse (polled in `events` by primary key, which puts it in installs_final; the probe checks
#     installs_final for every probed install at the end and counts any not there as missing, and a
#     read there that showed fewer than a later read as a short read);
#   - writer lag at the end of the step (consumer pending, from NATS monitoring) and how long the drain took;
#   - CPU seconds per 1k accepted events of every process (ingest, nats, writer, clickhouse, aggregator,
#     web, and the simulator itself); ClickHouse's query CPU by who asked (the writer's inserts, settle
#     and rollup passes; the web's dashboard; the freshness probe), from its query log; and the fleet's
#     total: every service and server, less the probe's queries and the generator.
# Then the overload phase: twice the sustained rate for OVERLOAD_SECS (sheds with 429/503 + Retry-After,
# p99 below the scripts' 5 s timeout), then a quarter of it (recovers by itself: nothing shed).
# At the end: the aggregator's peak RSS, its pending installs and the merge states it shed
# (MAX_PENDING_STATES; the lean generator's installs never end).
# Writes deploy/bench/out/e2e.tsv, e2e.json, e2e-queries.tsv, e2e-timeline.tsv, e2e-inserts.tsv (what the
# writer's inserts spent, per profile event) and the chart e2e.png
# (Chart.js from web/static/vendor, drawn by headless Chromium).
# Usage: deploy/bench/e2e.sh            (RATES="2000 5000 10000 15000 20000 25000" STEP_SECS=20 by default)
#        GENERATOR=loadgen deploy/bench/e2e.sh   the lean telemetry-loadgen (1 KB installing events from a
#        template, keep-alive, one thread, each request from its own X-Forwarded-For client) instead of
#        telemetry-simulate's realistic mix; its CPU is the `simulate` column either way.
#        NO_BUILD=1 skips the release build (binaries already in the target directory).
#        CONNECTIONS=N: the generator's connections, so also its most requests in flight (default 1024,
#        the edge's MAX_IN_FLIGHT); above that the edge's own limit sheds, as with many scripts at once.
#        FRESH_BIN=PATH runs another build of the freshness probe (to compare probes side by side).
#        The services take the rest of their settings from the environment: CACHE_REFRESH_PACE=0 runs the
#        web with every view refreshed each CACHE_TTL_SECS (10 here) whatever its computation costs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
RATES=${RATES:-2000 5000 10000 15000 20000 25000}
STEP_SECS=${STEP_SECS:-20}
PROBE_RATE=${PROBE_RATE:-20}
OVERLOAD_SECS=${OVERLOAD_SECS:-20}
CONNECTIONS=${CONNECTIONS:-1024}
GENERATOR=${GENERATOR:-simulate}
OUT="$ROOT/deploy/bench/out"
mkdir -p "$OUT"

ensure_python_tools
ensure_clickhouse
ensure_apt chromium chromium
PATH="$VENV/bin:$PATH"
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -q --bins -p ingest -p writer -p aggregator -p web -p traffic
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
FRESH_BIN=${FRESH_BIN:-$BIN/telemetry-fresh}
WORK=$(mktemp -d)
PIDS=()
cleanup() { main_shell || return 0; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_http() { for _ in $(seq 1 300); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; } # json FILE EXPR-over-d

# --- servers --------------------------------------------------------------------------------------
# The writer and the web log in as their own users (as in deploy/local/up), and the probe as `default`:
# ClickHouse's query log then splits its CPU by who asked (writer: inserts, settle and rollup passes;
# web: the viewer's dashboard; default: the freshness probe, which is the benchmark's, not the fleet's).
CH_WRITER_PASSWORD=bench-writer-$RANDOM$RANDOM CH_WEB_PASSWORD=bench-web-$RANDOM$RANDOM
CH_HTTP=$(free_port); CH_TCP=$(free_port); CH="$WORK/clickhouse"
CLICKHOUSE_QUERY_LOG=1 clickhouse_config "$CH" "$CH_HTTP" "$CH_TCP" "$CH_WRITER_PASSWORD" "$CH_WEB_PASSWORD"
# A query's CPU seconds (user + system, every thread), as a query_log expression.
QUERY_CPU="arraySum(arrayFilter((v, n) -> n IN ('UserTimeMicroseconds', 'SystemTimeMicroseconds'), ProfileEvents.Values, ProfileEvents.Names)) / 1e6"
clickhouse-server --config-file="$CH/config.xml" >"$WORK/ch.log" 2>&1 & CH_PID=$!; PIDS+=($CH_PID)
CH_URL="http://127.0.0.1:$CH_HTTP"
wait_http "$CH_URL/ping"
chq() { curl -fsS "$CH_URL" --data-binary "$1"; }

NATS_PORT=$(free_port); NATS_MON=$(free_port)
env $NATS_GO_ENV nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" >"$WORK/nats.log" 2>&1 & NATS_PID=$!; PIDS+=($NATS_PID)
wait_http "http://127.0.0.1:$NATS_MON/healthz"
export NATS_URL="nats://127.0.0.1:$NATS_PORT" CLICKHOUSE_URL="$CH_URL" LOG_LEVEL=warn

INGEST_PORT=$(free_port); INGEST="http://127.0.0.1:$INGEST_PORT"
LISTEN_ADDR="127.0.0.1:$INGEST_PORT" OPS_ADDR="127.0.0.1:$(free_port)" "$BIN/telemetry-ingest" >"$WORK/ingest.log" 2>&1 & INGEST_PID=$!; PIDS+=($INGEST_PID)
wait_http "$INGEST/readyz"
WRITER_OPS=$(free_port)
CLICKHOUSE_USER=writer CLICKHOUSE_PASSWORD=$CH_WRITER_PASSWORD WRITER_SINK=clickhouse OPS_ADDR="127.0.0.1:$WRITER_OPS" "$BIN/telemetry-writer" >"$WORK/writer.log" 2>&1 & WRITER_PID=$!; PIDS+=($WRITER_PID)
wait_http "http://127.0.0.1:$WRITER_OPS/readyz"
AGG_OPS=$(free_port)
OPS_ADDR="127.0.0.1:$AGG_OPS" "$BIN/telemetry-aggregator" >"$WORK/aggregator.log" 2>&1 & AGG_PID=$!; PIDS+=($AGG_PID)
wait_http "http://127.0.0.1:$AGG_OPS/healthz"
WEB_PORT=$(free_port); WEB="http://127.0.0.1:$WEB_PORT"; WEB_OPS=$(free_port)
CLICKHOUSE_USER=web CLICKHOUSE_PASSWORD=$CH_WEB_PASSWORD WEB_LISTEN_ADDR="127.0.0.1:$WEB_PORT" WEB_OPS_ADDR="127.0.0.1:$WEB_OPS" CACHE_TTL_SECS=10 "$BIN/telemetry-web" >"$WORK/web.log" 2>&1 & WEB_PID=$!; PIDS+=($WEB_PID)
wait_http "$WEB/readyz"
# One viewer on the dashboard for the whole run.
( while true; do curl -fs -o /dev/null "$WEB/api/dashboard?days=7" || true; sleep 1; done ) & PIDS+=($!)

SERVICES="ingest nats writer clickhouse aggregator web simulate"
pid_of() { case $1 in ingest) echo $INGEST_PID;; nats) echo $NATS_PID;; writer) echo $WRITER_PID;; clickhouse) echo $CH_PID;;
  aggregator) echo $AGG_PID;; web) echo $WEB_PID;; esac; }
pending() { # un-acked plus un-delivered messages of the ClickHouse writer's consumer
  curl -fsS "http://127.0.0.1:$NATS_MON/jsz?consumers=true" | python3 -c '
import json, sys
d = json.load(sys.stdin)
n = 0
for acc in d.get("account_details", []):
    for s in acc.get("stream_detail", []):
        for c in s.get("consumer_detail", []) or []:
            if c.get("name", "").endswith("clickhouse"):
                n += c.get("num_pending", 0) + c.get("num_ack_pending", 0)
print(n)'; }
TICK=$(getconf CLK_TCK)
# ClickHouse CPU seconds (user + system, every thread of each query) of the queries that finished at or
# after unix second $1, by user: "writer web default" on one line. Merges in the background are no
# query's; they are the rest of the server's CPU.
ch_cpu_by_user() {
  chq "SYSTEM FLUSH LOGS" >/dev/null
  chq "SELECT user, sum($QUERY_CPU) FROM system.query_log
       WHERE type = 2 AND event_time >= toDateTime($1) GROUP BY user FORMAT TSV" |
    awk '{ cpu[$1] = $2 } END { printf "%.3f %.3f %.3f", cpu["writer"], cpu["web"], cpu["default"] }'
}

# --- one step: offered rate for SECS --------------------------------------------------------------
# step NAME RATE SECS → prints one TSV row and leaves $WORK/NAME.json (simulator summary)
step() {
  local name=$1 rate=$2 secs=$3 s
  declare -A before
  for s in $SERVICES; do [ "$s" = simulate ] || before[$s]=$(cpu_ticks "$(pid_of "$s")"); done
  local began; began=$(date +%s)
  "$FRESH_BIN" --every 1 "$INGEST/telemetry" "$CH_URL" telemetry "$PROBE_RATE" "$secs" >"$WORK/$name.probe" 2>/dev/null &
  local probe=$!
  if [ "$GENERATOR" = loadgen ]; then
    /usr/bin/time -f '%U %S' -o "$WORK/$name.simcpu" "$BIN/telemetry-loadgen" "$INGEST/telemetry" "$rate" "$secs" "$CONNECTIONS" \
      --forwarded-for --timeout 10 --summary-json "$WORK/$name.json" >"$WORK/$name.simlog" 2>&1
  else
    /usr/bin/time -f '%U %S' -o "$WORK/$name.simcpu" "$BIN/telemetry-simulate" --url "$INGEST/telemetry" --rate "$rate" \
      --duration "$secs" --concurrency "$CONNECTIONS" --timeout 10 --quiet --summary-json "$WORK/$name.json" >/dev/null 2>"$WORK/$name.simlog"
  fi
  local lag; lag=$(pending)
  local drained_at=$SECONDS
  for _ in $(seq 1 600); do [ "$(pending)" = 0 ] && break; sleep 0.1; done
  local drain=$((SECONDS - drained_at))
  wait "$probe" || true
  local row="" cpu accepted elapsed
  accepted=$(json "$WORK/$name.json" "d['accepted']")
  elapsed=$(json "$WORK/$name.json" "d['elapsed_secs']")
  local fleet=0 ch_writer ch_web ch_probe
  read -r ch_writer ch_web ch_probe <<<"$(ch_cpu_by_user "$began")"
  per_1k() { printf '%.3f' "$(echo "scale=4; $1 * 1000 / ($accepted + 1)" | bc)"; }
  for s in $SERVICES; do
    if [ "$s" = simulate ]; then cpu=$(awk '{ print $1 + $2 }' "$WORK/$name.simcpu")
    else cpu=$(echo "scale=3; ($(cpu_ticks "$(pid_of "$s")") - ${before[$s]}) / $TICK" | bc); fi
    [ "$s" = simulate ] || fleet=$(echo "$fleet + $cpu" | bc)
    row+=$'\t'$(per_1k "$cpu")
  done
  # The fleet: every service and server, less the probe's queries (the generator is already apart).
  fleet=$(echo "$fleet - $ch_probe" | bc)
  row+=$'\t'$(per_1k "$ch_writer")$'\t'$(per_1k "$ch_web")$'\t'$(per_1k "$ch_probe")$'\t'$(per_1k "$fleet")
  # The edge's share of the latency, from each request's departure (loadgen only: without the wait for
  # one of its connections, which real scripts, each on its own connection, do not have).
  row+=$'\t'$(json "$WORK/$name.json" "d.get('service_p99_ms', '-')")
  local probe_line; probe_line=$(cat "$WORK/$name.probe")
  val() { echo "$probe_line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  printf '%s\t%s\t%.0f\t%.0f\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s%s\t%s\t%s\n' "$name" "$rate" \
    "$(json "$WORK/$name.json" "d['achieved_rate']")" "$(echo "$accepted / $elapsed" | bc -l)" \
    "$(json "$WORK/$name.json" "d['shed'] * 100 / max(1, d['sent'])")" \
    "$(json "$WORK/$name.json" "d['latency_p50_ms']")" "$(json "$WORK/$name.json" "d['latency_p99_ms']")" \
    "$(val p50_ms)" "$(val p99_ms)" "$lag" "$drain" "$row" "$(val missing)" "$(val short_reads)"
}

HEADER="step\toffered_rps\tachieved_rps\taccepted_per_s\tshed_pct\tingest_p50_ms\tingest_p99_ms\tfresh_p50_ms\tfresh_p99_ms\twriter_lag_end\tdrain_s"
for s in $SERVICES; do HEADER+="\tcpu_s_per_1k_$s"; done
HEADER+="\tch_queries_writer\tch_queries_web\tch_queries_probe\tcpu_s_per_1k_fleet\tingest_service_p99_ms\tfresh_missing\tfinal_short_reads"
printf "$HEADER\n" >"$OUT/e2e.tsv"
echo "== rising load: $RATES req/s, ${STEP_SECS}s each (probe $PROBE_RATE installs/s)" >&2
RUN_STARTED=$(date +%s)
for rate in $RATES; do
  row=$(step "rate$rate" "$rate" "$STEP_SECS")
  echo "$row" >>"$OUT/e2e.tsv"
  echo "$row" | cut -f1-11 >&2
done

# Sustained: the highest accepted rate of a step that shed under 0.1 % and whose writer drained within 5 s.
SUSTAINED=$(awk -F'\t' 'NR > 1 && $5 < 0.1 && $11 <= 5 && $4 > best { best = $4 } END { printf "%.0f", best }' "$OUT/e2e.tsv")
SHED_AT=$(awk -F'\t' 'NR > 1 && $5 >= 0.1 { print $2; exit }' "$OUT/e2e.tsv")
echo "sustained: $SUSTAINED accepted events/s; shedding starts at offered ${SHED_AT:-none of the steps} req/s" >&2

# --- overload: twice the sustained rate, then a quarter --------------------------------------------
# No step sustained (all shed a little): the overload phase starts from the best accepted rate instead.
BASE_RATE=$SUSTAINED
[ "$BASE_RATE" -gt 0 ] || BASE_RATE=$(awk -F'\t' 'NR > 1 && $4 > best { best = $4 } END { printf "%.0f", best + 1 }' "$OUT/e2e.tsv")
OVER=$(( BASE_RATE * 2 )); CALM=$(( BASE_RATE / 4 + 1 ))
echo "== overload: $OVER req/s for ${OVERLOAD_SECS}s, then $CALM req/s" >&2
( sleep $((OVERLOAD_SECS / 2))
  for i in $(seq 1 200); do
    curl -s -o /dev/null -D - -H "content-type: application/json" -H "x-forwarded-for: 203.0.113.$((i % 250))" \
      --data "{\"random_id\":\"ov-$i-$RANDOM\",\"type\":\"lxc\",\"nsapp\":\"probe\",\"status\":\"installing\"}" "$INGEST/telemetry"
  done >"$WORK/overload.headers" ) &
SAMPLER=$!
row=$(step overload "$OVER" "$OVERLOAD_SECS"); echo "$row" >>"$OUT/e2e.tsv"; echo "$row" | cut -f1-11 >&2
wait "$SAMPLER" || true
SHED_SAMPLES=$(grep -cE '^HTTP/1.1 (429|503)' "$WORK/overload.headers" || true)
WITH_RETRY_AFTER=$(grep -ciE '^retry-after:' "$WORK/overload.headers" || true)
row=$(step recovery "$CALM" "$OVERLOAD_SECS"); echo "$row" >>"$OUT/e2e.tsv"; echo "$row" | cut -f1-11 >&2
OVER_P99=$(json "$WORK/overload.json" "d['latency_p99_ms']")
OVER_SERVICE_P99=$(json "$WORK/overload.json" "d.get('service_p99_ms', '-')")
OVER_SHED=$(json "$WORK/overload.json" "d['shed']")
OVER_UNEXPECTED=$(json "$WORK/overload.json" "sum(d['unexpected_by_status'].values()) + d['transport_errors']")
RECOVERY_SHED=$(json "$WORK/recovery.json" "d['shed']")

# --- stored vs accepted ----------------------------------------------------------------------------
ACCEPTED_TOTAL=0
for f in "$WORK"/*.json; do ACCEPTED_TOTAL=$((ACCEPTED_TOTAL + $(json "$f" "d['accepted']"))); done
STORED=$(chq "SELECT count() FROM telemetry.events_final WHERE nsapp != 'fresh' AND nsapp != 'probe'")

# --- where ClickHouse's query CPU went -------------------------------------------------------------
chq "SYSTEM FLUSH LOGS" >/dev/null
chq "SELECT user, count() AS queries,
       round(sum($QUERY_CPU), 1) AS cpu_s,
       substring(replaceRegexpAll(query, '[[:space:]]+', ' '), 1, 100) AS query_start
     FROM system.query_log WHERE type = 2 GROUP BY user, query_start ORDER BY cpu_s DESC LIMIT 12
     FORMAT TSVWithNames" >"$OUT/e2e-queries.tsv" || true

# What the writer's inserts into `events` (with the views they feed) spent, summed over the run: every
# profile event of ClickHouse's query log, largest first (their CPU varies from run to run).
chq "SELECT name, sum(value) AS total FROM system.query_log ARRAY JOIN ProfileEvents.Names AS name, ProfileEvents.Values AS value
     WHERE type = 2 AND user = 'writer' AND query LIKE 'INSERT INTO \`telemetry\`.events(%'
     GROUP BY name ORDER BY total DESC FORMAT TSVWithNames" >"$OUT/e2e-inserts.tsv" || true

# Over time: per 10 s and user, ClickHouse's queries, their CPU, their longest duration and the rows they
# read (a writer insert or settle that waits for the web's dashboard shows here as a long max_ms).
chq "SELECT intDiv(toUInt32(event_time) - $RUN_STARTED, 10) * 10 AS second, user, count() AS queries,
       round(sum($QUERY_CPU), 2) AS cpu_s, max(query_duration_ms) AS max_ms, sum(read_rows) AS read_rows
     FROM system.query_log WHERE type = 2 AND event_time >= toDateTime($RUN_STARTED) AND user IN ('writer', 'web')
     GROUP BY second, user ORDER BY second, user FORMAT TSVWithNames" >"$OUT/e2e-timeline.tsv" || true

# --- chart ---------------------------------------------------------------------------------------
bash "$ROOT/deploy/bench/e2e-chart.sh" "$OUT/e2e.tsv" "$OUT/e2e.png"

echo
echo "end-to-end benchmark ($(nproc) cores, release, every service and server co-located, generator $GENERATOR)"
column -t -s $'\t' "$OUT/e2e.tsv"
echo
printf '%-58s %s\n' "sustained accepted events/s (shed < 0.1 %, writer drained ≤ 5 s)" "$SUSTAINED"
printf '%-58s %s\n' "ingest starts shedding at offered req/s" "${SHED_AT:-above the highest step}"
printf '%-58s %s\n' "overload ($OVER req/s offered): shed answers" "$OVER_SHED"
printf '%-58s %s\n' "overload: sampled 429/503 answers / with Retry-After" "$SHED_SAMPLES / $WITH_RETRY_AFTER"
printf '%-58s %s\n' "overload: ingest p99 ms (scripts time out at 5000)" "$OVER_P99"
printf '%-58s %s\n' "overload: of which the edge's, from departure" "$OVER_SERVICE_P99"
printf '%-58s %s\n' "overload: 5xx other than 503, and transport errors" "$OVER_UNEXPECTED"
printf '%-58s %s\n' "recovery ($CALM req/s): shed answers" "$RECOVERY_SHED"
printf '%-58s %s\n' "accepted (simulator) vs stored in events_final" "$ACCEPTED_TOTAL vs $STORED"
printf '%-58s %s\n' "probed installs missing (not seen, or not in installs_final)" \
  "$(awk -F'\t' 'NR > 1 { n += $(NF - 1) } END { print n + 0 }' "$OUT/e2e.tsv")"
printf '%-58s %s\n' "reads of installs_final short of probed installs, made up later" \
  "$(awk -F'\t' 'NR > 1 { n += $NF } END { print n + 0 }' "$OUT/e2e.tsv")"
# The web's dashboard refreshes: how many, how many views were read again (a settle during the read),
# and how long its last refreshed answer counted as fresh (CACHE_REFRESH_PACE).
WEB_METRICS=$(curl -fsS "http://127.0.0.1:$WEB_OPS/metrics" || true)
web_metric() { awk -v m="$1" -v l="$2" 'index($1, m) == 1 && (l == "" || index($1, l)) { s += $2 } END { printf "%g", s }' <<<"$WEB_METRICS"; }
printf '%-58s %s\n' "web: legacy dashboard refreshes / views read again" \
  "$(web_metric telemetry_web_cache_refreshes_total 'cache="legacy_dashboard"') / $(web_metric telemetry_web_settle_rereads_total '')"
printf '%-58s %s\n' "web: legacy dashboard fresh for (s, last refresh)" \
  "$(web_metric telemetry_web_cache_fresh_seconds 'cache="legacy_dashboard"')"
# The aggregator's memory: every generated install stays pending (no final), so past MAX_PENDING_STATES
# the oldest lose their merge state.
AGG_METRICS=$(curl -fsS "http://127.0.0.1:$AGG_OPS/metrics" || true)
printf '%-58s %s\n' "aggregator: peak RSS MB / pending installs / states shed" \
  "$(($(awk '/VmHWM/ {print $2}' "/proc/$AGG_PID/status" 2>/dev/null || echo 0) / 1024)) / $(awk '/^telemetry_aggregator_pending_installs / {print $2}' <<<"$AGG_METRICS") / $(awk '/^telemetry_aggregator_states_shed_total / {s = $2} END {print s + 0}' <<<"$AGG_METRICS")"
printf '%-58s %s\n' "chart" "$OUT/e2e.png"
echo
echo "ClickHouse's queries per 10 s (seconds from the first step) by user: $OUT/e2e-timeline.tsv"
echo "ClickHouse's query CPU over the whole run, by user and the start of the query ($OUT/e2e-queries.tsv):"
column -t -s $'\t' "$OUT/e2e-queries.tsv" 2>/dev/null || true
python3 - "$OUT/e2e.tsv" "$OUT/e2e.json" "$SUSTAINED" "${SHED_AT:-}" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
json.dump({"sustained_events_per_s": int(sys.argv[3]), "shedding_starts_at_rps": sys.argv[4] or None, "steps": rows},
          open(sys.argv[2], "w"), indent=1)
PY
