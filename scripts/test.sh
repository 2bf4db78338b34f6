#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs every test of the workspace.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    log "need root to install $*"; return 1
  fi
  if [ -z "${SWITCHYARD_APT_UPDATED:-}" ]; then
    apt-get update -qq >/dev/null && export SWITCHYARD_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Python 3 runs the python runtime's workers and the test handlers.
if ! command -v python3 >/dev/null 2>&1; then
  log "installing python3"
  apt_install python3
fi
python3 -c 'import sys; assert sys.version_info >= (3, 8), sys.version' \
  || { log "python3 must be 3.8 or newer"; exit 1; }

# Services the integration tests talk to over real connections. Each is checked and, when it does not
# answer, installed (Debian package) if missing and started with the same command the machine uses.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 120); do port_open "$port" && return 0; sleep 0.5; done
  log "$name does not answer on 127.0.0.1:$port"; return 1
}

ensure_nats() {
  port_open 4222 && return 0
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || apt_install nats-server
  log "starting nats-server (JetStream) on 127.0.0.1:4222"
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222 NATS
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || apt_install rabbitmq-server
  log "starting rabbitmq-server on 127.0.0.1:5672"
  rabbitmq-server -detached
  wait_port 5672 RabbitMQ
  # The AMQP port opens before the broker accepts logins; wait until it does.
  for _ in $(seq 1 60); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 1; done
}

ensure_postgres() {
  port_open 5432 && return 0
  local version
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql
    # A fresh install asks for passwords on TCP; the tests connect as postgres over 127.0.0.1 like the
    # development machines do (trust), so allow that for loopback only.
    version=$(ls /etc/postgresql | sort -V | tail -n1)
    sed -i '1i host all all 127.0.0.1/32 trust' "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  log "starting PostgreSQL $version on 127.0.0.1:5432"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_port 5432 PostgreSQL
}

# moto (server mode) stands in for S3, SQS and SNS. Installed once into a venv under
# $SWITCHYARD_TOOLS (reused when present) and left running like the other services. The S3 tests read
# its URL from SWITCHYARD_TEST_MOTO; set that yourself to use another moto (or S3-compatible) server.
SWITCHYARD_TOOLS="${SWITCHYARD_TOOLS:-/opt/switchyard-tools}"
MOTO_PORT="${SWITCHYARD_MOTO_PORT:-5055}"
ensure_moto() {
  [ -n "${SWITCHYARD_TEST_MOTO:-}" ] && return 0
  local dir="$SWITCHYARD_TOOLS/moto"
  if ! [ -x "$dir/bin/moto_server" ]; then
    log "installing moto[server] into $dir"
    python3 -m venv "$dir" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$dir"; }
    "$dir/bin/pip" install -q 'moto[server]'
  fi
  if ! port_open "$MOTO_PORT"; then
    log "starting moto_server on 127.0.0.1:$MOTO_PORT"
    nohup "$dir/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$dir/moto.log" 2>&1 &
    wait_port "$MOTO_PORT" moto
  fi
  export SWITCHYARD_TEST_MOTO="http://127.0.0.1:$MOTO_PORT"
}

# The debug build takes about 20 GB, and RabbitMQ stops its app (its disk alarm) when the disk is
# nearly full, which fails the AMQP tests in ways that do not say why: warn up front.
avail_kb=$(df -Pk . 2>/dev/null | awk 'NR == 2 {print $4}' || true)
if [ -n "$avail_kb" ] && [ "$avail_kb" -lt $((20 * 1024 * 1024)) ]; then
  log "warning: only $((avail_kb / 1024 / 1024)) GB free; the build needs about 20 GB, and RabbitMQ refuses messages on a nearly full disk"
fi

ensure_nats
ensure_rabbitmq
ensure_postgres
ensure_moto
# The PostgreSQL tests create and drop their own databases as this role (trust auth on the machine).
export SWITCHYARD_TEST_POSTGRES="${SWITCHYARD_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"

# rdkafka is built with its `ssl` feature (TLS and SASL SCRAM for the Kafka source) against the system
# OpenSSL, which openssl-sys finds through pkg-config.
if ! pkg-config --exists openssl 2>/dev/null; then
  log "installing libssl-dev and pkg-config (OpenSSL for librdkafka)"
  apt_install libssl-dev pkg-config
fi

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo is not on PATH: install the Rust toolchain (rustup) first"; exit 1
fi

# Kafka tests run against tansu (an Apache Kafka compatible broker in Rust), started per test on a
# free port from an empty directory. Built once (about 10 minutes) into a stable location and reused.
# Features: dynostore (memory storage, what most tests use) and libsql (SQLite storage: the memory
# storage keeps no SCRAM credentials, so the SCRAM tests create their users on SQLite).
TOOLS="${SWITCHYARD_TOOLS:-/opt/switchyard-tools}"
if ! mkdir -p "$TOOLS" 2>/dev/null || [ ! -w "$TOOLS" ]; then
  TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-tools"
fi
export SWITCHYARD_TANSU="${SWITCHYARD_TANSU:-$TOOLS/tansu/bin/tansu}"
ensure_tansu() {
  local root="$TOOLS/tansu"
  if [ -x "$SWITCHYARD_TANSU" ]; then
    # A tansu of your own is used as it is; ours is rebuilt if an older run built it without libsql.
    [ "$SWITCHYARD_TANSU" != "$root/bin/tansu" ] && return 0
    grep -q '"libsql"' "$root/.crates2.json" 2>/dev/null && return 0
    log "rebuilding tansu 0.6.0 in $root with SQLite storage (for the SCRAM tests; about 10 minutes)"
  else
    log "installing tansu 0.6.0 into $root (once; about 10 minutes)"
  fi
  cargo install tansu --version 0.6.0 --locked --force --no-default-features --features dynostore,libsql \
    --root "$root"
  [ -x "$SWITCHYARD_TANSU" ] || { log "tansu install did not produce $SWITCHYARD_TANSU"; return 1; }
}
ensure_tansu

# The TypeScript test runs a .ts handler through the typescript package (this machine's Node.js is
# older than 22.6, which strips types itself). Installed once from npm into $TOOLS/typescript.
export SWITCHYARD_TEST_TYPESCRIPT="${SWITCHYARD_TEST_TYPESCRIPT:-$TOOLS/typescript/node_modules/typescript}"
ensure_typescript() {
  [ -f "$SWITCHYARD_TEST_TYPESCRIPT/package.json" ] && return 0
  command -v npm >/dev/null 2>&1 || { log "npm is not on PATH: install Node.js and npm"; return 1; }
  log "installing typescript 5.9.3 into $TOOLS/typescript"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/typescript" typescript@5.9.3
}
ensure_typescript

log "running tests (unit, integration, CloudEvents conformance, bench smoke runs)"
cargo test --workspace --all-targets --locked "$@"
