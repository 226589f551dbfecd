#!/usr/bin/env bash
# Runs the benchmarks against this machine's daemons — benches/converge.rs (the real
# daemons, docker-compose) then benches/fleet.rs (fleets of simulated daemons) — and writes
# the report to BENCHMARKS.md. Needs the test environment: `hack/test-env.sh up` first (this
# script runs it, idempotently). Sizes: BENCH_SIZES=10,50,100; repetitions: BENCH_REPS=3;
# fleet sizes (targets): BENCH_FLEET_SIZES=10,100,1000. With STEVEDORE_E2E_KUBECONFIG naming
# a disposable real API server, the fleet benchmark measures the controller too, at
# BENCH_FLEET_CONTROLLER_SIZES=10,100,1000 (objects reconciled at once: BENCH_FLEET_RECONCILES),
# and three sharded replicas at BENCH_FLEET_SHARDED_SIZES=1000.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/test-env.sh up
command -v docker-compose >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
}
cargo bench --bench converge >BENCHMARKS.md.tmp
cargo bench --bench fleet >>BENCHMARKS.md.tmp
mv BENCHMARKS.md.tmp BENCHMARKS.md
cat BENCHMARKS.md
