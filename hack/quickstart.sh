#!/usr/bin/env bash
# The quick start: makes the demo image on this machine's Docker daemon when it is missing
# (from Debian's busybox-static; nothing is pulled) and runs Stevedore on
# examples/quickstart until interrupted. Extra arguments go to `stevedore run`, e.g. --once.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib/busybox-rootfs.sh
source hack/lib/busybox-rootfs.sh
if ! docker image inspect stevedore-demo/httpd:1 >/dev/null 2>&1; then
    busybox_ensure_package
    tar="$(mktemp -d)/rootfs.tar"
    busybox_rootfs_tar quickstart "$tar"
    busybox_image stevedore-demo/httpd:1 "$tar"
    rm -rf "$(dirname "$tar")"
fi
exec cargo run --quiet -- run -f examples/quickstart "$@"
