#!/usr/bin/env bash
# Runs Palisade's whole test suite: unit, integration, end-to-end (real loopback servers,
# a real redis-server) and doc tests. Installs the one system package the tests need
# (redis-server) when it is missing; you need root or sudo for that.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server not found: installing it (the Redis store's tests start a real one)"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

exec cargo test --workspace --all-features "$@"
