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

# Valkey, where the distribution ships it (Debian 13 does, Debian 12 does not): best effort.
if ! command -v valkey-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
    && apt-cache show valkey-server >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-remove valkey-server >/dev/null || true
fi

cargo test --workspace --all-features "$@"

# The fleet tests once more against Valkey, when it is there (servers started by the tests).
if [ $# -eq 0 ] && command -v valkey-server >/dev/null 2>&1; then
    echo "valkey-server found: the fleet tests again against it"
    PALISADE_REDIS_SERVER=valkey-server cargo test -p palisade-tests --test e2e fleet
fi
