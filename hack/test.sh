#!/usr/bin/env bash
# Stevedore's test command: brings up the real test environment (idempotent) and runs every
# test against it. The README and .ci/run both use exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/test-env.sh up
cargo test "$@"
