#!/usr/bin/env bash
# Aggregator and alerter figures (issue 4), release build, on this machine:
#   1. replay throughput: telemetry-aggregator started on a pre-filled stream of INSTALLS installs
#      (2 events each), events/s until it reports "replay done" (target >= 50k/s);
#   2. memory: RSS (and peak RSS) with those installs in the window, after the first snapshot
#      (target <= 100 MB for 1M installs);
#   3. latency from the event that crosses an alert threshold to the mail in the SMTP sink, with the
#      default intervals (PUBLISH_INTERVAL_MS=5000, ALERT_EVAL_INTERVAL_MS=1000) (target <= 30 s).
# Usage: deploy/bench/aggregator.sh [INSTALLS, default 1000000]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
INSTALLS=${1:-1000000}

ensure_python_tools
cargo build --release --locked -q -p aggregator -p alerter -p traffic --bins
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() { main_shell || return 0; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

now_ms() { python3 -c 'import time; print(int(time.time()*1000))'; }
wait_http() { for _ in $(seq 1 ${2:-6000}); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "not ready: $1" >&2; exit 1; }
wait_port() { for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not open" >&2; exit 1; }
kib() { awk -v k="$1" '/^'"$2"':/ {print $2}' "/proc/$3/status"; }

NATS_PORT=$(free_port); AGG_OPS=$(free_port); ALERT_OPS=$(free_port); SMTP_PORT=$(free_port)
NATS_URL="nats://127.0.0.1:$NATS_PORT"
nats-server -js -sd "$WORK/nats" -a 127.0.0.1 -p "$NATS_PORT" >/dev/null 2>&1 & PIDS+=($!)
wait_port "$NATS_PORT"

echo "== filling the stream with $INSTALLS installs ($((INSTALLS * 2)) events)" >&2
"$BIN/telemetry-fill" --nats-url "$NATS_URL" installs "$INSTALLS" >/dev/null

echo "== 1. replay throughput" >&2
NATS_URL="$NATS_URL" OPS_ADDR="127.0.0.1:$AGG_OPS" LOG_FORMAT=json LOG_LEVEL=info \
  "$BIN/telemetry-aggregator" 2>"$WORK/aggregator.log" & AGG_PID=$!; PIDS+=($AGG_PID)
wait_http "http://127.0.0.1:$AGG_OPS/readyz"
DONE=$(grep '"replay done' "$WORK/aggregator.log" | head -n1)
EVENTS=$(echo "$DONE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events"])')
SECS=$(echo "$DONE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secs"])')
RATE=$(python3 -c "print(round($EVENTS / $SECS))")
echo "replay: $EVENTS events in ${SECS}s = $RATE events/s" >&2

echo "== 2. memory with $INSTALLS installs in the window" >&2
# Two publish intervals: the first snapshot (the largest, every key is new) has been computed and written.
sleep 11
RSS=$(kib x VmRSS "$AGG_PID"); HWM=$(kib x VmHWM "$AGG_PID")
INSTALLS_GAUGE=$(curl -fsS "http://127.0.0.1:$AGG_OPS/metrics" | awk '/^telemetry_aggregator_installs / {print $2}')
ROLLUP=$(curl -fsS "http://127.0.0.1:$AGG_OPS/metrics" | awk '/^telemetry_aggregator_rollup_seconds_sum / {s=$2} /^telemetry_aggregator_rollup_seconds_count / {c=$2} END {if (c>0) printf "%.3f", s/c}')
echo "installs tracked: $INSTALLS_GAUGE; RSS $((RSS / 1024)) MiB, peak $((HWM / 1024)) MiB; mean snapshot time ${ROLLUP}s" >&2

echo "== 3. threshold-crossing event -> mail" >&2
"$VENV/bin/python" -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$WORK/mail" & PIDS+=($!)
wait_port "$SMTP_PORT"
NATS_URL="$NATS_URL" OPS_ADDR="127.0.0.1:$ALERT_OPS" SMTP_HOST=127.0.0.1 SMTP_PORT="$SMTP_PORT" SMTP_TLS=none \
  SMTP_TO=bench@localhost ALERT_WINDOW=1h ALERT_SIGNATURE_MIN_INSTALLS=1000000000 LOG_LEVEL=warn \
  "$BIN/telemetry-alerter" 2>"$WORK/alerter.log" & PIDS+=($!)
wait_http "http://127.0.0.1:$ALERT_OPS/readyz"
T0=$("$BIN/telemetry-fill" --nats-url "$NATS_URL" cross benchapp 10)
# The subject of the first mail about benchapp (headers unfolded and decoded: a long Subject is folded
# over two lines, so a grep of its first line misses the app's name).
benchapp_subject() {
  python3 - "$WORK/mail/new" <<'PY'
import email, email.policy, pathlib, sys
d = pathlib.Path(sys.argv[1])
for f in sorted(d.glob("*")) if d.is_dir() else []:
    subject = str(email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["Subject"] or "")
    if "benchapp" in subject:
        print(subject)
        break
PY
}
while [ -z "$(benchapp_subject)" ]; do
  if (($(now_ms) - T0 > 120000)); then echo "no mail within 120 s" >&2; tail "$WORK/alerter.log" >&2; exit 1; fi
  sleep 0.05
done
T1=$(now_ms)
SUBJECT=$(benchapp_subject)
MAILS=$(ls "$WORK/mail/new" | wc -l)
echo "mail after $(python3 -c "print(($T1 - $T0) / 1000)") s: $SUBJECT ($MAILS mail(s) in the sink)" >&2

printf '\nRESULT installs=%s replay_events_per_s=%s rss_mib=%s peak_rss_mib=%s snapshot_s=%s alert_latency_s=%s\n' \
  "$INSTALLS" "$RATE" "$((RSS / 1024))" "$((HWM / 1024))" "$ROLLUP" "$(python3 -c "print(($T1 - $T0) / 1000)")"
