#!/usr/bin/env bash
# Runs Palisade's whole test suite: unit, integration, end-to-end (real loopback servers,
# a real redis-server) and doc tests. Installs the system packages the tests need
# (redis-server, and Chromium for the lab's HTML report test) when they are missing; you
# need root or sudo for that.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
missing=()
if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server not found: installing it (the Redis store's tests start a real one)"
    missing+=(redis-server)
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

exec cargo test --workspace --all-features "$@"
