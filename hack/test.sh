#!/usr/bin/env bash
# Stevedore's test command: brings up the real test environment (idempotent) and runs every
# test against it, then prints one closing line with the totals. The README and .ci/run
# both use exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/test-env.sh up
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Unit and integration tests (benches are not tests: `hack/bench.sh` runs them).
status=0
cargo test --lib --bins --tests "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
