#!/usr/bin/env bash
# Hostile names against the aggregator and the alerter, release build, on this machine: a client makes up
# NAMES app names (PER_NAME failed installs each, every install from its own made-up random_id: the worst
# case) spread over NAMES distinct error signatures, published straight to the event stream
# (telemetry-fill flood). Prints the aggregator's and the alerter's peak RSS (VmHWM from /proc), the
# aggregator's peak again after a restart that replays the flood, the mails the SMTP sink received against
# the budget, and the keys of telemetry_stats.
# Usage: deploy/bench/flood.sh [--scale NAMES (100000)] [--per-name N (10)] [--budget B (10)]
#                              [--period SECS (60; the budget period, an hour in production)]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
NAMES=100000 PER_NAME=10 BUDGET=10 PERIOD=60
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) NAMES=$2; shift 2 ;;
    --per-name) PER_NAME=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --period) PERIOD=$2; shift 2 ;;
    *) echo "usage: $0 [--scale NAMES] [--per-name N] [--budget B] [--period SECS]" >&2; exit 2 ;;
  esac
done

ensure_python_tools
cargo build --release --locked -q -p aggregator -p alerter -p traffic --bins
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
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
"$BIN/telemetry-fill" --nats-url "$NATS_URL" flood "$NAMES" "$NAMES" --per-name "$PER_NAME" >/dev/null
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

printf '\nRESULT names=%s signatures=%s events=%s aggregator_peak_mib=%s aggregator_replay_peak_mib=%s alerter_peak_mib=%s mails=%s budget=%s period_s=%s digests=%s folded=%s kv_keys=%s kv_keys_after_restart=%s\n' \
  "$NAMES" "$NAMES" "$EVENTS" "$((AGG_HWM / 1024))" "$((REPLAY_HWM / 1024))" "$((ALERT_HWM / 1024))" "$MAILS" "$BUDGET" "$PERIOD" "$DIGESTS" "$FOLDED" "$KEYS" "$KEYS_AFTER"
