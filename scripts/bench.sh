#!/usr/bin/env bash
# Runs every benchmark group side by side and regenerates BENCHMARKS.md from what the run
# wrote (target/palisade-*.json), with the date, the machine and the commit. README quotes
# figures only from BENCHMARKS.md: never edit a figure by hand, run this script.
#
#   bash scripts/bench.sh                 # every group (a few minutes on 2 cores)
#   bash scripts/bench.sh limit-concurrency rate-keyless   # some groups only
#
# Extra criterion arguments can be given with BENCH_ARGS (default: a short warm-up and
# measurement, as the figures in BENCHMARKS.md use).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
args="${BENCH_ARGS:---warm-up-time 1 --measurement-time 3}"
load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
rm -f "$target"/palisade-*.json

if [ "$#" -eq 0 ]; then
    # shellcheck disable=SC2086
    cargo bench -p palisade-benches --bench main -- $args
else
    for group in "$@"; do
        # shellcheck disable=SC2086
        cargo bench -p palisade-benches --bench main -- "$group" $args
    done
fi

python3 scripts/benchmarks_md.py "$target" "$load_before" "$args" "$*" > BENCHMARKS.md
echo "BENCHMARKS.md regenerated"
