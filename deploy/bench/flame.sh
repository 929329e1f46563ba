#!/usr/bin/env bash
# A flame graph of a running process, for the profiles kept in deploy/bench/results/: `perf` samples the
# process at 999 Hz with DWARF call graphs for SECONDS, and inferno folds the stacks and draws the SVG.
# The machine has no hardware counters here, so the samples are `cpu-clock` (CPU time, kernel included).
# Also prints the ten hottest frames of the process's own code (self time) and the share of kernel time.
# Usage: deploy/bench/flame.sh PROCESS-NAME SECONDS OUT.svg      (e.g. while deploy/bench/e2e.sh runs:
#        deploy/bench/flame.sh telemetry-writer 10 deploy/bench/results/writer-flame.svg)
# Installs linux-perf (apt) and inferno (cargo install) when missing.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
[ $# -eq 3 ] || { sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
NAME=$1 SECS=$2 OUT=$3

ensure_apt perf linux-perf
command -v inferno-flamegraph >/dev/null 2>&1 || cargo install --locked --quiet inferno
PID=$(pidof -s "$NAME" || true)
[ -n "$PID" ] || { echo "no running process named $NAME" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'main_shell && rm -rf "$WORK"' EXIT

say "sampling $NAME (pid $PID) for ${SECS}s"
perf record -q -F 999 -g --call-graph dwarf,16384 -p "$PID" -o "$WORK/perf.data" -- sleep "$SECS" 2>/dev/null
perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf --all >"$WORK/folded"
inferno-flamegraph --title "$NAME, ${SECS}s at 999 Hz" <"$WORK/folded" >"$OUT"
python3 - "$WORK/folded" <<'PY'
import collections, sys
total, kernel, self_time = 0, 0, collections.Counter()
for line in open(sys.argv[1]):
    stack, n = line.rsplit(" ", 1)
    n = int(n); total += n
    frames = stack.split(";")
    if frames[-1].endswith("_[k]"):
        kernel += n
    self_time[frames[-1]] += n
print(f"samples {total}, kernel {100 * kernel / max(total, 1):.1f} %")
for frame, n in self_time.most_common(10):
    print(f"{100 * n / total:5.1f} %  {frame[:110]}")
PY
echo "flame graph: $OUT"
