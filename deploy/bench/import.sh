#!/usr/bin/env bash
# telemetry-import figures: a PocketBase collection made like the running service's (through its API,
# from writer/tests/fixtures/pocketbase-telemetry-collection.json) and filled with N install records,
# imported by `telemetry-import pocketbase` (release build) into a fresh ClickHouse. Prints records/s,
# the wall time, the CPU seconds of each process (importer, PocketBase, ClickHouse), what bounds the
# run, and checks that installs_final holds the seeded installs, by status.
#
# Seeding is fast: the collection is created through the API, PocketBase is stopped, and the rows go
# straight into its SQLite file (pb_data/data.db, one column per field, `created`/`updated` as
# `YYYY-MM-DD HH:MM:SS.mmmZ` text) with Python's sqlite3 in one transaction; then PocketBase starts again.
#
# Usage: deploy/bench/import.sh          N=2500000 DAYS=485 BATCH_SIZE=10000 by env (the records are spread
#        evenly over DAYS days from 2025-01-01); KEEP=1 keeps the work dir.
# Every server runs on the same cores as the importer.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../local/lib.sh"
cd "$ROOT"
N=${N:-2500000}
DAYS=${DAYS:-485}
export IMPORT_BATCH_SIZE=${BATCH_SIZE:-10000}

ensure_python_tools
ensure_clickhouse
PATH="$VENV/bin:$PATH"
cargo build --release --locked -q -p writer --bin telemetry-import
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  main_shell || return 0
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && say "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

wait_http() { for _ in $(seq 1 600); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; say "not ready: $1"; exit 1; }
# CPU seconds (user + system) a running process has used so far.
cpu_of() { awk -v tck="$(getconf CLK_TCK)" '{ print ($14 + $15) / tck }' "/proc/$1/stat"; }
# CPU seconds the whole machine has been busy so far (all cores, idle and iowait excluded).
machine_cpu() { awk -v tck="$(getconf CLK_TCK)" '/^cpu / { print ($2 + $3 + $4 + $7 + $8 + $9) / tck }' /proc/stat; }

PB_PORT=$(free_port); PB_URL="http://127.0.0.1:$PB_PORT"
export PB_IDENTITY=bench@example.com PB_PASSWORD=benchbenchbench
pocketbase superuser upsert "$PB_IDENTITY" "$PB_PASSWORD" --dir "$WORK/pb" >/dev/null
start_pocketbase() {
  pocketbase serve --http "127.0.0.1:$PB_PORT" --dir "$WORK/pb" >>"$WORK/pb.log" 2>&1 &
  PB_PID=$!; PIDS+=("$PB_PID")
  wait_http "$PB_URL/api/health"
}

say "== collection like the running service's, through the API"
start_pocketbase
TOKEN=$(curl -fsS -X POST "$PB_URL/api/collections/_superusers/auth-with-password" -H 'content-type: application/json' \
  -d "{\"identity\":\"$PB_IDENTITY\",\"password\":\"$PB_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
curl -fsS -o /dev/null -X POST "$PB_URL/api/collections" -H "authorization: $TOKEN" -H 'content-type: application/json' \
  --data-binary @writer/tests/fixtures/pocketbase-telemetry-collection.json
kill "$PB_PID"; wait "$PB_PID" 2>/dev/null || true

say "== seeding $N records into pb_data/data.db (PocketBase stopped)"
SEED_START=$(date +%s.%N)
python3 - "$WORK/pb/data.db" "$N" "$WORK/expected.json" "$DAYS" <<'PY'
import datetime, json, random, sqlite3, sys

path, n, expected_path, days = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rng = random.Random(42)
db = sqlite3.connect(path)
db.execute("PRAGMA synchronous=OFF")
columns = [r[1] for r in db.execute("PRAGMA table_info(telemetry)")]
apps = [f"app-{i:03d}" for i in range(300)] + ["jellyfin", "Home Assistant", "docker", "pihole", "nginx"]
statuses = ["success"] * 72 + ["failed"] * 13 + ["installing"] * 6 + ["aborted"] * 3 + ["unknown"] * 4 \
    + ["validation", "configuring"]
kinds = ["lxc"] * 85 + ["vm"] * 10 + ["pve"] * 3 + ["addon"] * 2
fail_codes = [1, 2, 100, 101, 127, 137, 143, 28, 7, 6, 255, 203, 160]
categories = {1: "shell", 2: "shell", 100: "apt", 101: "apt", 127: "command_not_found", 137: "resource",
              143: "signal", 28: "timeout", 7: "network", 6: "network", 255: "apt", 203: "proxmox", 160: "dependency"}
line = "Setting up libfoo (1.2.3-4) ...\nUnpacking bar (2.0) over (1.9) ...\n"
logs = [
    "E: Unable to locate package foo\n" + line * k for k in (2, 10, 40)
] + [
    f"curl: (7) Failed to connect to 192.168.{k}.20 port 443 after 3 ms: Connection refused\n" + line * 8 for k in range(5)
] + ["npm ERR! code ELIFECYCLE\n" + line * 25, "Killed\n" + line * 4]
start = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
span = datetime.timedelta(days=days)
step = span / n
installs = {}
placeholders = ",".join("?" * len(columns))

def rows():
    install = None
    for i in range(n):
        at = (start + step * i).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
        if install is not None and i % 50 == 49:
            # A second record of the same install (the old service made one when a final came first).
            rec = dict(install, id=f"{i:015x}", created=at, updated=at)
        else:
            status = rng.choice(statuses)
            ident = f"{rng.getrandbits(64):016x}-{i:x}"
            rec = {
                "id": f"{i:015x}", "created": at, "updated": at, "random_id": ident, "execution_id": ident,
                "type": rng.choice(kinds), "nsapp": rng.choice(apps), "status": status,
                "ct_type": rng.choice((0, 1)), "disk_size": rng.randint(2, 64), "core_count": rng.randint(1, 8),
                "ram_size": rng.choice((512, 1024, 2048, 4096, 8192)), "os_type": rng.choice(("debian", "ubuntu", "alpine")),
                "os_version": rng.choice(("12", "13", "24.04", "3.21")), "pve_version": rng.choice(("8.2.4", "8.3.0", "8.4.1", "9.0.3")),
                "method": rng.choice(("default", "advanced")), "exit_code": 0, "error": "", "error_category": "",
                "install_duration": rng.randint(20, 900) if status in ("success", "failed") else 0,
                "cpu_vendor": rng.choice(("intel", "amd")), "cpu_model": "Intel(R) N100", "gpu_vendor": "unknown",
                "gpu_model": "", "gpu_passthrough": "unknown", "ram_speed": "4800", "repo_source": "ProxmoxVE",
                "repo_slug": "community-scripts/ProxmoxVE", "has_arm": 0,
            }
            if status in ("failed", "unknown"):
                code = rng.choice(fail_codes)
                rec.update(exit_code=code, error=rng.choice(logs), error_category=categories[code])
            elif status == "aborted":
                rec.update(exit_code=130, error="Installation aborted by user (SIGINT)", error_category="user_aborted")
            install = rec
            installs[ident] = status
        yield tuple(rec.get(c, "") for c in columns)

with db:
    db.executemany(f"INSERT INTO telemetry ({','.join(columns)}) VALUES ({placeholders})", rows())
db.close()
by_status = {}
for status in installs.values():
    by_status[status] = by_status.get(status, 0) + 1
json.dump({"records": n, "installs": len(installs), "by_status": by_status}, open(expected_path, "w"))
PY
SEED_SECS=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $SEED_START }")
say "seeded in ${SEED_SECS}s ($(du -sh "$WORK/pb/data.db" | cut -f1) data.db)"
start_pocketbase

CH_HTTP=$(free_port); CH_TCP=$(free_port)
clickhouse_config "$WORK/clickhouse" "$CH_HTTP" "$CH_TCP"
clickhouse-server --config-file="$WORK/clickhouse/config.xml" >"$WORK/ch.log" 2>&1 &
CH_PID=$!; PIDS+=("$CH_PID")
CH_URL="http://127.0.0.1:$CH_HTTP"
wait_http "$CH_URL/ping"

say "== telemetry-import pocketbase ($N records, batch $IMPORT_BATCH_SIZE)"
PB_CPU0=$(cpu_of "$PB_PID"); CH_CPU0=$(cpu_of "$CH_PID"); ALL_CPU0=$(machine_cpu)
CLICKHOUSE_URL="$CH_URL" LOG_LEVEL=info IMPORT_PROGRESS=log IMPORT_PROGRESS_SECS=15 \
python3 - "$WORK/run.json" "$BIN/telemetry-import" pocketbase --url "$PB_URL" --collection telemetry \
  --state "$WORK/state.json" --report-json "$WORK/report.json" <<'PY' >"$WORK/report.txt"
import json, resource, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t = time.monotonic()
code = subprocess.call(cmd)
wall = time.monotonic() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
json.dump({"code": code, "wall": wall, "cpu": r.ru_utime + r.ru_stime}, open(out, "w"))
PY
PB_CPU1=$(cpu_of "$PB_PID"); CH_CPU1=$(cpu_of "$CH_PID"); ALL_CPU1=$(machine_cpu)
cat "$WORK/report.txt" >&2

python3 - "$WORK" "$CH_URL" "$(nproc)" "$PB_CPU0" "$PB_CPU1" "$CH_CPU0" "$CH_CPU1" "$SEED_SECS" "$ALL_CPU0" "$ALL_CPU1" <<'PY'
import json, sys, urllib.request
work, ch, cores = sys.argv[1], sys.argv[2], int(sys.argv[3])
pb_cpu = float(sys.argv[5]) - float(sys.argv[4])
ch_cpu = float(sys.argv[7]) - float(sys.argv[6])
seed = float(sys.argv[8])
machine_cpu = float(sys.argv[10]) - float(sys.argv[9])
run = json.load(open(f"{work}/run.json"))
report = json.load(open(f"{work}/report.json"))
expected = json.load(open(f"{work}/expected.json"))
def q(sql):
    return urllib.request.urlopen(urllib.request.Request(ch, data=sql.encode())).read().decode()
version = q("SELECT version()").strip()
installs = int(q("SELECT count() FROM telemetry.installs_final"))
by_status = {}
for line in q("SELECT status, count() FROM telemetry.installs_final GROUP BY status").splitlines():
    status, count = line.split("\t")
    by_status[status] = int(count)
events = int(q("SELECT count() FROM telemetry.events_final"))
wall, imp_cpu = run["wall"], run["cpu"]
total_cpu = imp_cpu + pb_cpu + ch_cpu
others = max(machine_cpu - total_cpu, 0.0)
busy = machine_cpu / (cores * wall) if wall else 0
shares = sorted([("importer", imp_cpu), ("PocketBase", pb_cpu), ("ClickHouse", ch_cpu)], key=lambda s: -s[1])
if busy >= 0.85:
    bound = (f"CPU: the {cores} cores were {busy:.0%} busy ({total_cpu / (cores * wall):.0%} this import, "
             f"{others / (cores * wall):.0%} other processes); of the import's, {shares[0][0]} took the most "
             f"({shares[0][1] / total_cpu:.0%})")
else:
    bound = (f"not CPU ({busy:.0%} of {cores} cores busy): the pipeline waits on its slowest stage, "
             f"{shares[0][0]} ({shares[0][1] / wall:.0%} of a core)")
ok_installs = installs == expected["installs"]
ok_status = by_status == expected["by_status"]
ok_events = events == expected["records"]
print()
print(f"import benchmark ({cores} cores, release, PocketBase and ClickHouse {version} on the same cores)")
rows = [
    ("records seeded in PocketBase", f"{expected['records']}"),
    ("seeding (sqlite3, PocketBase stopped)", f"{seed:.1f} s"),
    ("exit code", f"{run['code']}"),
    ("import wall time", f"{wall:.1f} s ({wall / 60:.1f} min, aim < 10 min for 2.5M)"),
    ("records/s", f"{report['read'] / wall:.0f}" if wall else "0"),
    ("CPU s: importer", f"{imp_cpu:.1f}"),
    ("CPU s: PocketBase", f"{pb_cpu:.1f}"),
    ("CPU s: ClickHouse", f"{ch_cpu:.1f}"),
    ("CPU s: other processes on the machine", f"{others:.1f}"),
    ("bound by", bound),
    ("report: read / installs / written / rejected", f"{report['read']} / {report['installs']} / {report['written']} / {report['rejected']}"),
    ("installs_final: expected / found", f"{expected['installs']} / {installs} {'OK' if ok_installs else 'MISMATCH'}"),
    ("installs_final by status", "OK" if ok_status else f"MISMATCH {by_status} != {expected['by_status']}"),
    ("events_final: expected / found", f"{expected['records']} / {events} {'OK' if ok_events else 'MISMATCH'}"),
]
for name, value in rows:
    print(f"{name:<46} {value}")
sys.exit(0 if run["code"] == 0 and ok_installs and ok_status and ok_events else 1)
PY
