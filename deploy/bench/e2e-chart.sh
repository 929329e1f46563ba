#!/usr/bin/env bash
# Draws the chart of deploy/bench/e2e.sh from its TSV: accepted and achieved events/s, ingest p99 and
# freshness p99 against the offered rate of each step. Chart.js comes from web/static/vendor and headless
# Chromium renders the page to PNG; nothing is fetched from the network.
# Usage: deploy/bench/e2e-chart.sh deploy/bench/out/e2e.tsv deploy/bench/out/e2e.png
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TSV=$1 PNG=$2
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
python3 - "$TSV" "$WORK/chart.html" "$ROOT/web/static/vendor/chart.umd.min.js" <<'PY'
import csv, json, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t") if r["step"].startswith("rate")]
num = lambda v: None if v in ("", "NaN", "nan") else float(v)
series = lambda key: [{"x": float(r["offered_rps"]), "y": num(r[key])} for r in rows]
data = {"accepted": series("accepted_per_s"), "achieved": series("achieved_rps"),
        "p99": series("ingest_p99_ms"), "fresh": series("fresh_p99_ms")}
html = f"""<!doctype html><html><head><meta charset="utf-8"><script src="file://{sys.argv[3]}"></script>
<style>body{{margin:0;font-family:sans-serif;background:#fff}}</style></head><body>
<canvas id="c" width="1200" height="650"></canvas><script>
const d = {json.dumps(data)};
new Chart(document.getElementById('c'), {{
  type: 'line', options: {{ animation: false, responsive: false,
    plugins: {{ title: {{ display: true, text: 'telemetry fleet end to end (2 cores, every service co-located): throughput and latency vs offered load' }} }},
    scales: {{ x: {{ type: 'linear', title: {{ display: true, text: 'offered requests/s (target of the simulator)' }} }},
      y: {{ title: {{ display: true, text: 'events/s' }}, beginAtZero: true }},
      y1: {{ position: 'right', type: 'logarithmic', min: 1, title: {{ display: true, text: 'latency ms (log)' }}, grid: {{ drawOnChartArea: false }} }} }} }},
  data: {{ datasets: [
    {{ label: 'requests/s the simulator issued', data: d.achieved, borderColor: '#94a3b8', yAxisID: 'y' }},
    {{ label: 'accepted events/s', data: d.accepted, borderColor: '#2563eb', yAxisID: 'y' }},
    {{ label: 'ingest p99 ms', data: d.p99, borderColor: '#dc2626', yAxisID: 'y1' }},
    {{ label: 'freshness p99 ms (202 → installs_final)', data: d.fresh, borderColor: '#16a34a', yAxisID: 'y1' }} ] }} }});
</script></body></html>"""
open(sys.argv[2], "w").write(html)
PY
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$WORK/chrome" --allow-file-access-from-files \
  --window-size=1200,650 --virtual-time-budget=3000 --screenshot="$PNG" "file://$WORK/chart.html" >/dev/null 2>&1
[ -s "$PNG" ] && echo "chart: $PNG" >&2
