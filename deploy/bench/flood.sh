#!/usr/bin/env bash
# Hostile names against the aggregator, the alerter and the dashboard, release build, on this machine: a
# client makes up NAMES app names (PER_NAME failed installs each, every install from its own made-up
# random_id: the worst case) spread over NAMES distinct error signatures, published straight to the event
# stream (telemetry-fill flood) as fast as the broker takes them (the edge's rate limit would spread them:
# 1 000 addresses at RATE_LIMIT_RPM=120 send 2 000 a second; the rate reached is printed). Prints the
# aggregator's and the alerter's peak RSS (VmHWM from /proc), the aggregator's peak again after a restart
# that replays the flood, the mails the SMTP sink received against the budget, and the keys of
# telemetry_stats. The dashboard part: ClickHouse seeded with SEED installs (deploy/bench/web-seed.sql),
# the writer storing the flood into it, a web with its cache and one with ENABLE_CACHE=false; wrk gets
# /api/dashboard?days=30 from both at once for WEB_SECS, first without the flood, then while it runs,
# and the p50/p99 of both phases are printed side by side.
# Usage: deploy/bench/flood.sh [--scale NAMES (100000)] [--per-name N (10)] [--budget B (10)]
#                              [--period SECS (60; the budget period, an hour in production)]
#                              [--seed INSTALLS (100000)] [--web-secs SECS (20)]
#                              [--rate EVENTS_PER_SEC (0: as fast as the broker takes them; 2000 is
#                               1 000 addresses at the edge's limit)]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
NAMES=100000 PER_NAME=10 BUDGET=10 PERIOD=60 SEED=100000 WEB_SECS=20 RATE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) NAMES=$2; shift 2 ;;
    --per-name) PER_NAME=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --period) PERIOD=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --web-secs) WEB_SECS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    *) echo "usage: $0 [--scale NAMES] [--per-name N] [--budget B] [--period SECS] [--seed INSTALLS] [--web-secs SECS] [--rate EVENTS_PER_SEC]" >&2; exit 2 ;;
  esac
done

ensure_python_tools
ensure_clickhouse
ensure_apt wrk wrk
cargo build --release --locked -q -p aggregator -p alerter -p writer -p web -p traffic --bins
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() { main_shell || return 0; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_http() { for _ in $(seq 1 ${2:-12000}); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "not ready: $1" >&2; exit 1; }
wait_port() { for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not open" >&2; exit 1; }
kib() { awk '/^'"$1"':/ {print $2}' "/proc/$2/status"; }
metric() { curl -fsS "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2; f=1} END {if (!f) print 0}'; }
mails() { ls "$WORK/mail/new" 2>/dev/null | wc -l; }

NATS_PORT=$(free_port); AGG_OPS=$(free_port); ALERT_OPS=$(free_port); SMTP_PORT=$(free_port)
NATS_URL="nats://127.0.0.1:$NATS_PORT"
nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$NATS_PORT" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$NATS_PORT"

# The dashboard's side: ClickHouse with SEED installs, the writer (its migrations, then the flood), and two
# webs, one with its cache and one without.
CH_HTTP=$(free_port); CH_TCP=$(free_port)
CH="$WORK/clickhouse"; clickhouse_config "$CH" "$CH_HTTP" "$CH_TCP"
clickhouse-server --config-file="$CH/config.xml" >"$WORK/ch.log" 2>&1 & PIDS+=($!)
CH_URL="http://127.0.0.1:$CH_HTTP"
wait_http "$CH_URL/ping"
chq() { curl -fsS "$CH_URL" --data-binary "$1"; }
WRITER_SINK=clickhouse CLICKHOUSE_URL="$CH_URL" NATS_URL="$NATS_URL" OPS_ADDR="127.0.0.1:$(free_port)" \
  LOG_LEVEL=warn "$BIN/telemetry-writer" >"$WORK/writer.log" 2>&1 & PIDS+=($!)
for _ in $(seq 1 600); do
  [ "$(chq "SELECT count() FROM system.tables WHERE database = 'telemetry' AND name = 'installs_final'")" = 1 ] && break
  sleep 0.1
done
echo "== seeding $SEED installs ($((SEED * 4)) events) over 30 days" >&2
sed -e "s/{INSTALLS}/$SEED/g; s/{EVENTS}/$((SEED * 4))/g; s/{DAYS}/30/g; s/{OFFSET}/0/g" deploy/bench/web-seed.sql \
  | curl -fsS "$CH_URL" --data-binary @-
for _ in $(seq 1 600); do [ "$(chq "SELECT count() FROM system.merges")" = 0 ] && break; sleep 1; done
WEB_PORTS=()
for cache in true false; do
  port=$(free_port); WEB_PORTS+=("$port")
  WEB_LISTEN_ADDR="127.0.0.1:$port" WEB_OPS_ADDR="127.0.0.1:$(free_port)" CLICKHOUSE_URL="$CH_URL" NATS_URL="$NATS_URL" \
    ENABLE_CACHE=$cache LOG_LEVEL=warn "$BIN/telemetry-web" >"$WORK/web-$cache.log" 2>&1 & PIDS+=($!)
done
for port in "${WEB_PORTS[@]}"; do wait_http "http://127.0.0.1:$port/readyz"; done
DASHBOARD=/api/dashboard?days=30
for port in "${WEB_PORTS[@]}"; do curl -fsS -o /dev/null "http://127.0.0.1:$port$DASHBOARD"; done
# wrk's "99%  1.23ms" → milliseconds.
wrk_ms() { awk -v p="$1" '$1 == p { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v = v / 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v = v * 1000 } printf "%.2f", v }'; }
# dashboard PHASE: wrk on the cached and the uncached web at once, WEB_SECS; prints "p50 p99 p50 p99 req/s req/s".
dashboard() {
  wrk -t1 -c4 -d"${WEB_SECS}s" --timeout 60s --latency "http://127.0.0.1:${WEB_PORTS[0]}$DASHBOARD" >"$WORK/wrk-cached-$1.txt" & local cached=$!
  wrk -t1 -c1 -d"${WEB_SECS}s" --timeout 60s --latency "http://127.0.0.1:${WEB_PORTS[1]}$DASHBOARD" >"$WORK/wrk-uncached-$1.txt"
  wait "$cached"
  local f
  for f in cached uncached; do
    printf '%s %s ' "$(wrk_ms 50% <"$WORK/wrk-$f-$1.txt")" "$(wrk_ms 99% <"$WORK/wrk-$f-$1.txt")"
  done
  for f in cached uncached; do printf '%s ' "$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk-$f-$1.txt")"; done
  echo
}
echo "== dashboard without the flood: wrk ${WEB_SECS}s on the cached and the uncached web at once" >&2
read -r QUIET_C50 QUIET_C99 QUIET_U50 QUIET_U99 QUIET_CRPS QUIET_URPS < <(dashboard quiet)
echo "cached p50 ${QUIET_C50} ms p99 ${QUIET_C99} ms (${QUIET_CRPS}/s); uncached p50 ${QUIET_U50} ms p99 ${QUIET_U99} ms (${QUIET_URPS}/s)" >&2
"$VENV/bin/python" -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$WORK/mail" & PIDS+=($!)
wait_port "$SMTP_PORT"

start_aggregator() {
  NATS_URL="$NATS_URL" OPS_ADDR="127.0.0.1:$AGG_OPS" LOG_FORMAT=json LOG_LEVEL=info \
    "$BIN/telemetry-aggregator" 2>>"$WORK/aggregator.log" & AGG_PID=$!; PIDS+=($AGG_PID)
}
start_aggregator
NATS_URL="$NATS_URL" OPS_ADDR="127.0.0.1:$ALERT_OPS" SMTP_HOST=127.0.0.1 SMTP_PORT="$SMTP_PORT" SMTP_TLS=none \
  SMTP_TO=bench@localhost ALERT_MAIL_BUDGET_PER_HOUR="$BUDGET" ALERT_MAIL_BUDGET_PERIOD_SECS="$PERIOD" LOG_LEVEL=warn \
  "$BIN/telemetry-alerter" 2>"$WORK/alerter.log" & ALERT_PID=$!; PIDS+=($ALERT_PID)
wait_http "http://127.0.0.1:$AGG_OPS/readyz"
wait_http "http://127.0.0.1:$ALERT_OPS/readyz"

EVENTS=$((NAMES * PER_NAME))
echo "== flood: $NAMES made-up app names x $PER_NAME failed installs ($EVENTS events), $NAMES signatures" >&2
FLOOD_STARTED=$(date +%s.%N)
( "$BIN/telemetry-fill" --nats-url "$NATS_URL" flood "$NAMES" "$NAMES" --per-name "$PER_NAME" --rate "$RATE" >/dev/null
  echo "$(date +%s.%N)" >"$WORK/flood-done" ) & FILL_PID=$!
echo "== dashboard during the flood: the same wrk, started with it" >&2
read -r FLOOD_C50 FLOOD_C99 FLOOD_U50 FLOOD_U99 FLOOD_CRPS FLOOD_URPS < <(dashboard flood)
echo "cached p50 ${FLOOD_C50} ms p99 ${FLOOD_C99} ms (${FLOOD_CRPS}/s); uncached p50 ${FLOOD_U50} ms p99 ${FLOOD_U99} ms (${FLOOD_URPS}/s)" >&2
wait "$FILL_PID"
FLOOD_SECS=$(echo "$(cat "$WORK/flood-done") - $FLOOD_STARTED" | bc)
FLOOD_RATE=$(echo "$EVENTS / $FLOOD_SECS" | bc)
echo "flood published in ${FLOOD_SECS}s: $FLOOD_RATE events/s (1 000 addresses at their rate limit: 2 000/s)" >&2
until [ "$(metric "$AGG_OPS" telemetry_aggregator_events_total | cut -d. -f1)" -ge "$EVENTS" ]; do sleep 0.5; done
echo "aggregator read every event; letting two snapshots and the alerter's evaluations pass" >&2
sleep 15
# The digest of the budget period the alerts fell in is mailed once the next period starts.
NOW=$(date +%s); sleep $((PERIOD - NOW % PERIOD + 10))

AGG_HWM=$(kib VmHWM "$AGG_PID"); AGG_RSS=$(kib VmRSS "$AGG_PID")
ALERT_HWM=$(kib VmHWM "$ALERT_PID")
KEYS=$("$BIN/telemetry-fill" --nats-url "$NATS_URL" keys telemetry_stats)
TRACKED=$(curl -fsS "http://127.0.0.1:$AGG_OPS/metrics" | awk '/^telemetry_aggregator_names\{.*kind="app".*state="tracked"/ {print $2}')
OTHER=$(curl -fsS "http://127.0.0.1:$AGG_OPS/metrics" | awk '/^telemetry_aggregator_names\{.*kind="app".*state="other"/ {print $2}')
SNAP=$(curl -fsS "http://127.0.0.1:$AGG_OPS/metrics" | awk '/^telemetry_aggregator_rollup_seconds_sum / {s=$2} /^telemetry_aggregator_rollup_seconds_count / {c=$2} END {if (c>0) printf "%.3f", s/c}')
MAILS=$(mails)
FOLDED=$(curl -fsS "http://127.0.0.1:$ALERT_OPS/metrics" | awk '/^telemetry_alerter_mails_folded_total/ {s+=$2} END {print s+0}')
SENT=$(curl -fsS "http://127.0.0.1:$ALERT_OPS/metrics" | awk '/^telemetry_alerter_mails_sent_total/ {s+=$2} END {print s+0}')
DIGESTS=$(metric "$ALERT_OPS" telemetry_alerter_digests_sent_total)
echo "aggregator: RSS $((AGG_RSS / 1024)) MiB, peak $((AGG_HWM / 1024)) MiB; apps tracked $TRACKED, other $OTHER; mean snapshot ${SNAP}s" >&2
echo "alerter: peak $((ALERT_HWM / 1024)) MiB; mails $MAILS ($SENT alerts, $DIGESTS digest(s)), folded $FOLDED, budget $BUDGET per ${PERIOD}s" >&2
echo "telemetry_stats keys: $KEYS" >&2
grep -h '^Subject:' "$WORK/mail/new"/* 2>/dev/null | head -n 3 >&2 || true

echo "== restart: the aggregator replays the flood" >&2
kill "$AGG_PID"; wait "$AGG_PID" 2>/dev/null || true
start_aggregator
wait_http "http://127.0.0.1:$AGG_OPS/readyz"
sleep 11
REPLAY_HWM=$(kib VmHWM "$AGG_PID")
REPLAY_SECS=$(grep '"replay done' "$WORK/aggregator.log" | tail -n1 | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["secs"], 1))')
KEYS_AFTER=$("$BIN/telemetry-fill" --nats-url "$NATS_URL" keys telemetry_stats)
echo "replay: ${REPLAY_SECS}s, peak $((REPLAY_HWM / 1024)) MiB; telemetry_stats keys $KEYS_AFTER" >&2

printf '\nDASHBOARD %s p50/p99 ms, quiet vs flood: cached %s/%s vs %s/%s; uncached %s/%s vs %s/%s (flood published at %s events/s for %ss)\n' \
  "$DASHBOARD" "$QUIET_C50" "$QUIET_C99" "$FLOOD_C50" "$FLOOD_C99" "$QUIET_U50" "$QUIET_U99" "$FLOOD_U50" "$FLOOD_U99" "$FLOOD_RATE" "$FLOOD_SECS"
printf '\nRESULT names=%s signatures=%s events=%s aggregator_peak_mib=%s aggregator_replay_peak_mib=%s alerter_peak_mib=%s mails=%s budget=%s period_s=%s digests=%s folded=%s kv_keys=%s kv_keys_after_restart=%s\n' \
  "$NAMES" "$NAMES" "$EVENTS" "$((AGG_HWM / 1024))" "$((REPLAY_HWM / 1024))" "$((ALERT_HWM / 1024))" "$MAILS" "$BUDGET" "$PERIOD" "$DIGESTS" "$FOLDED" "$KEYS" "$KEYS_AFTER"
