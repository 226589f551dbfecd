#!/usr/bin/env bash
# Makes the quick start's image, stevedore-demo/httpd:1, on the daemon DOCKER_HOST points at
# (the local one by default) when it is missing: busybox httpd from Debian's busybox-static,
# imported locally — nothing is pulled.
set -euo pipefail
# shellcheck source=hack/lib/busybox-rootfs.sh
source "$(dirname "$0")/lib/busybox-rootfs.sh"
docker image inspect stevedore-demo/httpd:1 >/dev/null 2>&1 && exit 0
busybox_ensure_package
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
busybox_rootfs_tar quickstart "$work/rootfs.tar"
busybox_image stevedore-demo/httpd:1 "$work/rootfs.tar"
