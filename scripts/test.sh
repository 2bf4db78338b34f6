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

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo is not on PATH: install the Rust toolchain (rustup) first"; exit 1
fi

log "running tests (unit, integration, CloudEvents conformance, bench smoke runs)"
cargo test --workspace --all-targets --locked "$@"
