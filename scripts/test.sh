#!/usr/bin/env bash
# Runs Palisade's whole test suite: unit, integration, end-to-end (real loopback servers,
# a real redis-server, a 3-node Redis Cluster) and doc tests. Installs the system packages
# the tests need (redis-server, and redis-tools for `redis-cli --cluster create`) when they
# are missing; you need root or sudo for that.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "redis-server or redis-cli not found: installing them (the Redis tests start real servers and a cluster)"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi

exec cargo test --workspace --all-features "$@"
