#!/usr/bin/env bash
# Runs Palisade's whole test suite: unit, integration, end-to-end (real loopback servers,
# a real redis-server, a 3-node Redis Cluster) and doc tests. Installs the system packages
# the tests need (redis-server, redis-tools for `redis-cli --cluster create`, and Chromium for
# the lab's HTML report test) when they are missing; you need root or sudo for that.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
missing=()
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "redis-server or redis-cli not found: installing them (the Redis tests start real servers and a cluster)"
    missing+=(redis-server redis-tools)
fi
if [ -z "${PALISADE_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1 && ! command -v google-chrome >/dev/null 2>&1; then
    echo "chromium not found: installing it (the lab's report test renders its HTML headless)"
    missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
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
