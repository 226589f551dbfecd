#!/usr/bin/env bash
# The quick start: makes the demo image when it is missing (hack/demo-image.sh) and runs
# Stevedore on examples/quickstart until interrupted. Extra arguments go to `stevedore run`,
# e.g. --once.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/demo-image.sh
exec cargo run --quiet -- run -f examples/quickstart "$@"
