#!/usr/bin/env bash
# Runs the benchmark (benches/converge.rs) against this machine's daemons and writes the
# report to BENCHMARKS.md. Needs the test environment: `hack/test-env.sh up` first (this
# script runs it, idempotently). Sizes: BENCH_SIZES=10,50,100; repetitions: BENCH_REPS=3.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/test-env.sh up
command -v docker-compose >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
}
cargo bench --bench converge >BENCHMARKS.md.tmp
mv BENCHMARKS.md.tmp BENCHMARKS.md
cat BENCHMARKS.md
