# Shared by hack/ scripts: images made locally from Debian's busybox-static (no registry
# needed). Source it; it defines functions only.

# Installs busybox-static when missing (needs root).
busybox_ensure_package() {
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' \
        && return 0
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        busybox-static >/dev/null
}

# busybox_rootfs_tar VERSION TAR — a root filesystem with every busybox applet (httpd, sleep,
# sh, wget, ...) as a link, /www/index.html naming VERSION; written to TAR once.
busybox_rootfs_tar() {
    local version=$1 tar=$2
    [[ -s $tar ]] && return 0
    local dir
    dir=$(mktemp -d)
    mkdir -p "$dir"/{bin,etc,tmp,www,root}
    chmod 1777 "$dir/tmp"
    cp /bin/busybox "$dir/bin/busybox"
    local applet
    for applet in $("$dir/bin/busybox" --list); do
        [[ $applet == busybox ]] || ln -sf busybox "$dir/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
        >"$dir/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
    echo "$version" >"$dir/etc/stevedore-image-version"
    echo "stevedore test image $version" >"$dir/www/index.html"
    tar -C "$dir" -cf "$tar" .
    rm -rf "$dir"
}

# busybox_image TAG TAR — imports TAR as TAG (an HTTP server on port 8080 serving /www) into
# the daemon DOCKER_HOST points at, unless it is already there.
busybox_image() {
    local tag=$1 tar=$2
    docker image inspect "$tag" >/dev/null 2>&1 && return 0
    docker import \
        --change 'ENV PATH=/bin' \
        --change 'WORKDIR /' \
        --change 'EXPOSE 8080' \
        --change 'CMD ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]' \
        "$tar" "$tag" >/dev/null
}
