#!/usr/bin/env bash
# Starts (and stops) everything Stevedore's tests talk to, on this machine only:
#
#   1. two test images made from Debian's busybox-static (`docker import`), v1 and v2,
#      and the quick start's image
#   2. a second Docker daemon on its own unix socket, data-root, exec-root and bridge
#   3. a third Docker daemon on TCP with TLS client-certificate verification
#   4. a registry (Debian's docker-registry) with TLS and htpasswd auth, holding the images,
#      and a second one on plain HTTP (the usual lab registry), with the same auth and images
#   5. sshd on a loopback port whose user reaches the second daemon with
#      `docker system dial-stdio`, the way ssh:// Docker hosts are reached
#   6. the other engines hosts run: a Docker 26 daemon (Debian trixie's docker.io and
#      containerd, unpacked beside the system's 20.10) and a Podman 4.3 service (Debian
#      bookworm's `podman system service`), each on its own unix socket, roots and bridge
#
# Usage: hack/test-env.sh up|down|status|restart-second
#
# `up` is idempotent: what already runs is kept. Every process it starts is recorded in a
# pid file under $STEVEDORE_TEST_DIR and `down` stops exactly those processes (never by
# name). The addresses and credentials the tests need are written to $STEVEDORE_TEST_DIR/env.
set -euo pipefail
# shellcheck source=hack/lib/busybox-rootfs.sh
source "$(dirname "$0")/lib/busybox-rootfs.sh"

STATE=${STEVEDORE_TEST_DIR:-/tmp/stevedore-test-env}
# Downloads kept across runs (Docker 26's packages).
CACHE=${STEVEDORE_TEST_CACHE:-/var/cache/stevedore-test}
ENV_FILE="$STATE/env"
CERTS="$STATE/certs"

TLS_DAEMON_PORT=${STEVEDORE_TEST_TLS_PORT:-23760}
REGISTRY_PORT=${STEVEDORE_TEST_REGISTRY_PORT:-25000}
PLAIN_REGISTRY_PORT=${STEVEDORE_TEST_PLAIN_REGISTRY_PORT:-25001}
SSH_PORT=${STEVEDORE_TEST_SSH_PORT:-22220}
REGISTRY="127.0.0.1:$REGISTRY_PORT"
PLAIN_REGISTRY="127.0.0.1:$PLAIN_REGISTRY_PORT"
REGISTRY_USER=stevedore
MAIN_HOST=unix:///var/run/docker.sock

IMAGE_LOCAL=stevedore-test/busybox
IMAGE_REMOTE="$REGISTRY/stevedore/busybox"

log() { printf 'test-env: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- packages ----------------------------------------------------------------------------

ensure_packages() {
    local missing=()
    local pkg
    for pkg in busybox-static docker-registry openssh-server openssh-client apache2-utils lua5.1 \
        openssl curl iproute2 podman netavark aardvark-dns; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    # The package may ship a service on :5000; the harness runs its own registry instead.
    command -v docker-registry >/dev/null || die "docker-registry did not install"
    # The real Helm engine (Helm's Go SDK, from PyPI) renders and lints the chart in tests.
    if ! python3 -c 'import helm_python' 2>/dev/null; then
        log "installing helm-python-sdk"
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
            'helm-python-sdk==0.2.2' >/dev/null
    fi
}

# Docker 26: Debian trixie's docker.io and containerd, downloaded through an apt
# configuration of their own (the machine's sources and installed packages stay as they are)
# and unpacked under $CACHE/docker26. The daemon runs there with the system's runc.
fetch_docker26() {
    local root="$CACHE/docker26" apt="$CACHE/apt-trixie"
    [[ -x $root/usr/sbin/dockerd && -x $root/usr/bin/containerd ]] && return 0
    log "downloading Docker 26 (trixie's docker.io and containerd)"
    mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$root"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
        "http://deb.debian.org/debian trixie main" >"$apt/sources.list"
    local options=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=-"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt" -o "Dir::Cache::Archives=$apt/archives"
        -o "APT::Sandbox::User=root")
    apt-get "${options[@]}" update -qq
    (cd "$apt/archives" && apt-get "${options[@]}" download -qq docker.io/trixie containerd/trixie)
    local deb
    for deb in "$apt"/archives/docker.io_*.deb "$apt"/archives/containerd_*.deb; do
        dpkg-deb -x "$deb" "$root"
    done
    [[ -x $root/usr/sbin/dockerd ]] || die "Docker 26 did not unpack into $root"
}

# --- processes ---------------------------------------------------------------------------

pid_alive() {
    local pidfile=$1
    [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

stop_pidfile() {
    local name=$1 pidfile=$2
    if pid_alive "$pidfile"; then
        local pid
        pid=$(cat "$pidfile")
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not stop in 30 s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

wait_for() {
    local what=$1
    shift
    for _ in $(seq 1 150); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    die "$what did not come up within 30 s"
}

# --- certificates ------------------------------------------------------------------------

make_ca() {
    local name=$1 subject=$2
    [[ -s "$CERTS/$name.crt" ]] && return 0
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$subject" \
        -keyout "$CERTS/$name.key" -out "$CERTS/$name.crt" 2>/dev/null
}

# make_cert NAME CA USAGE SAN — a leaf certificate signed by CA.
make_cert() {
    local name=$1 ca=$2 usage=$3 san=$4
    [[ -s "$CERTS/$name.crt" ]] && return 0
    local ext="$CERTS/$name.ext"
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        [[ -n $san ]] && echo "subjectAltName=$san"
    } >"$ext"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" \
        -keyout "$CERTS/$name.key" -out "$CERTS/$name.csr" 2>/dev/null
    openssl x509 -req -in "$CERTS/$name.csr" -CA "$CERTS/$ca.crt" -CAkey "$CERTS/$ca.key" \
        -CAcreateserial -days 3650 -extfile "$ext" -out "$CERTS/$name.crt" 2>/dev/null
    rm -f "$CERTS/$name.csr" "$ext"
}

make_certs() {
    mkdir -p "$CERTS"
    chmod 700 "$CERTS"
    make_ca ca "stevedore test CA"
    # A CA that signed nothing the harness serves: tests use it as "the wrong CA".
    make_ca other-ca "stevedore unrelated CA"
    make_cert daemon ca serverAuth "IP:127.0.0.1,DNS:localhost"
    make_cert client ca clientAuth ""
    make_cert registry ca serverAuth "IP:127.0.0.1,DNS:localhost"
    # A daemon certificate from the unrelated CA, for "server presents a foreign cert" tests.
    make_cert foreign-daemon other-ca serverAuth "IP:127.0.0.1,DNS:localhost"
}

# --- images ------------------------------------------------------------------------------

docker_main() { DOCKER_HOST=$MAIN_HOST DOCKER_CONFIG="$STATE/docker-config" docker "$@"; }

make_images() {
    local version
    for version in v1 v2; do
        busybox_rootfs_tar "$version" "$STATE/rootfs-$version.tar"
        DOCKER_HOST=$MAIN_HOST busybox_image "$IMAGE_LOCAL:$version" "$STATE/rootfs-$version.tar"
    done
    # The quick start's image, so its test runs examples/quickstart as a person would.
    DOCKER_HOST=$MAIN_HOST "$(dirname "$0")/demo-image.sh"
}

# Copies the test images into another daemon with save/load, so image IDs are identical.
load_images_into() {
    local host=$1
    shift
    local version
    for version in v1 v2; do
        if ! DOCKER_HOST=$host "$@" docker image inspect "$IMAGE_LOCAL:$version" >/dev/null 2>&1; then
            docker_main save "$IMAGE_LOCAL:$version" | DOCKER_HOST=$host "$@" docker load -q >/dev/null
        fi
    done
}

# --- extra daemons -----------------------------------------------------------------------

# start_daemon NAME BRIDGE_CIDR EXTRA_ARGS... — a dockerd with its own roots and bridge.
start_daemon() {
    local name=$1 cidr=$2
    shift 2
    local dir="$STATE/$name" bridge="stv-$name"
    mkdir -p "$dir/data" "$dir/exec"
    if pid_alive "$dir/dockerd.pid"; then return 0; fi
    # An own config file: the machine's /etc/docker/daemon.json names the main data-root.
    echo '{}' >"$dir/daemon.json"
    if ! ip link show "$bridge" >/dev/null 2>&1; then
        ip link add "$bridge" type bridge
        ip addr add "$cidr" dev "$bridge"
    fi
    ip link set "$bridge" up
    local driver=vfs
    [[ -e /dev/fuse ]] && command -v fuse-overlayfs >/dev/null && driver=fuse-overlayfs
    log "starting dockerd $name"
    setsid dockerd \
        --config-file "$dir/daemon.json" \
        --data-root "$dir/data" \
        --exec-root "$dir/exec" \
        --pidfile "$dir/dockerd.own.pid" \
        --storage-driver "$driver" \
        --bridge "$bridge" \
        --iptables=false --ip-masq=false \
        "$@" \
        </dev/null >"$dir/dockerd.log" 2>&1 &
    # Not in setsid's own process group, so setsid execs dockerd and $! is dockerd's pid.
    # (dockerd's own --pidfile is a different file: it refuses to start over a live pid.)
    echo $! >"$dir/dockerd.pid"
}

start_second_daemon() {
    start_daemon d2 172.31.252.1/24 --host "unix://$STATE/d2/docker.sock"
    wait_for "second daemon" env DOCKER_HOST="unix://$STATE/d2/docker.sock" docker version
}

# Docker 26 from $CACHE/docker26, with its own containerd (dockerd starts the one first on
# PATH) and a bridge of its own: a 26.x daemon told `--bridge none` deletes the host's docker0.
start_docker26() {
    local root="$CACHE/docker26"
    PATH="$root/usr/bin:$root/usr/sbin:$PATH" start_daemon d26 172.31.251.1/24 \
        --host "unix://$STATE/d26/docker.sock"
    wait_for "Docker 26 daemon" env DOCKER_HOST="unix://$STATE/d26/docker.sock" docker version
}

# --- podman ------------------------------------------------------------------------------

PODMAN_DIR="$STATE/podman"

# podman_cli ARGS... — the podman CLI on the harness's own storage and configuration.
podman_cli() {
    CONTAINERS_CONF="$PODMAN_DIR/containers.conf" \
        CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf" \
        CONTAINERS_REGISTRIES_CONF="$PODMAN_DIR/registries.conf" podman "$@"
}

# Podman's Docker-compatible API, rootful, on its own storage, network and socket. What a
# Podman host needs that a Docker host does not is configured here, as its admin would:
# ulimits within this machine's hard limits (Podman asks for more than the sandbox allows
# and every start fails with "error setting rlimits"), and the plain-HTTP lab registry
# listed as insecure (Podman, unlike Docker, does not trust 127.0.0.0/8 by itself).
start_podman() {
    mkdir -p "$PODMAN_DIR/storage" "$PODMAN_DIR/run" "$PODMAN_DIR/tmp" "$PODMAN_DIR/networks"
    cat >"$PODMAN_DIR/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$PODMAN_DIR/events.log"
tmp_dir = "$PODMAN_DIR/tmp"
[network]
network_backend = "netavark"
network_config_dir = "$PODMAN_DIR/networks"
default_subnet = "172.31.250.0/24"
EOF
    cat >"$PODMAN_DIR/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$PODMAN_DIR/storage"
runroot = "$PODMAN_DIR/run"
EOF
    cat >"$PODMAN_DIR/registries.conf" <<EOF
[[registry]]
location = "$PLAIN_REGISTRY"
insecure = true
EOF
    if ! pid_alive "$PODMAN_DIR/service.pid"; then
        log "starting the Podman service"
        setsid env CONTAINERS_CONF="$PODMAN_DIR/containers.conf" \
            CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf" \
            CONTAINERS_REGISTRIES_CONF="$PODMAN_DIR/registries.conf" \
            podman system service --time 0 "unix://$PODMAN_DIR/podman.sock" \
            </dev/null >"$PODMAN_DIR/service.log" 2>&1 &
        echo $! >"$PODMAN_DIR/service.pid"
    fi
    wait_for "Podman service" env DOCKER_HOST="unix://$PODMAN_DIR/podman.sock" docker version
    if ! pid_alive "$PODMAN_DIR/healthcheck.pid"; then
        podman_health_checks </dev/null >"$PODMAN_DIR/healthcheck.log" 2>&1 &
        echo $! >"$PODMAN_DIR/healthcheck.pid"
    fi
}

# Podman schedules health checks with systemd timers; this machine has no systemd, so this
# loop stands in for them: each running container with a health check gets
# `podman healthcheck run` once per its own interval, which records the verdict as the
# timer's run would (inspect's State.Health, health_status events).
podman_health_checks() {
    declare -A due
    local now id interval running
    while sleep 0.5; do
        now=$(date +%s%N)
        mapfile -t running < <(podman_cli ps -q --no-trunc 2>/dev/null)
        ((${#running[@]})) || continue
        while read -r id interval; do
            [[ -n $interval && $interval != 0 ]] || continue
            if ((now >= ${due[$id]:-0})); then
                due[$id]=$((now + interval))
                podman_cli healthcheck run "$id" >/dev/null 2>&1 &
            fi
        done < <(podman_cli inspect --format \
            '{{.Id}} {{if .Config.Healthcheck}}{{printf "%d" .Config.Healthcheck.Interval}}{{end}}' \
            "${running[@]}" 2>/dev/null)
        wait
    done
}

# Stops every container of the harness's Podman: unlike dockerd's, they outlive the service.
stop_podman_containers() {
    [[ -s $PODMAN_DIR/storage.conf ]] || return 0
    podman_cli rm --all --force --time 2 >/dev/null 2>&1 || true
}

tls_docker() {
    DOCKER_HOST="tcp://127.0.0.1:$TLS_DAEMON_PORT" DOCKER_TLS_VERIFY=1 \
        DOCKER_CERT_PATH="$STATE/tls-client" "$@"
}

start_tls_daemon() {
    # The docker CLI reads ca.pem/cert.pem/key.pem from DOCKER_CERT_PATH.
    mkdir -p "$STATE/tls-client"
    cp "$CERTS/ca.crt" "$STATE/tls-client/ca.pem"
    cp "$CERTS/client.crt" "$STATE/tls-client/cert.pem"
    cp "$CERTS/client.key" "$STATE/tls-client/key.pem"
    start_daemon dtls 172.31.253.1/24 \
        --host "tcp://127.0.0.1:$TLS_DAEMON_PORT" \
        --host "unix://$STATE/dtls/docker.sock" \
        --tlsverify \
        --tlscacert "$CERTS/ca.crt" \
        --tlscert "$CERTS/daemon.crt" \
        --tlskey "$CERTS/daemon.key"
    wait_for "TLS daemon" tls_docker docker version
}

# --- registry ----------------------------------------------------------------------------

start_registry() {
    local dir="$STATE/registry"
    mkdir -p "$dir/data"
    if [[ ! -s "$dir/password" ]]; then
        head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$dir/password"
    fi
    local password
    password=$(cat "$dir/password")
    htpasswd -Bbn "$REGISTRY_USER" "$password" >"$dir/htpasswd" 2>/dev/null
    # Every daemon on this machine reads registry CAs from /etc/docker/certs.d.
    mkdir -p "/etc/docker/certs.d/$REGISTRY"
    cp "$CERTS/ca.crt" "/etc/docker/certs.d/$REGISTRY/ca.crt"
    if ! pid_alive "$dir/registry.pid"; then
        cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $REGISTRY
  secret: stevedore-test-registry
  tls:
    certificate: $CERTS/registry.crt
    key: $CERTS/registry.key
auth:
  htpasswd:
    realm: stevedore-test
    path: $dir/htpasswd
EOF
        log "starting registry on $REGISTRY"
        setsid docker-registry serve "$dir/config.yml" </dev/null >"$dir/registry.log" 2>&1 &
        echo $! >"$dir/registry.pid"
    fi
    wait_for registry curl -sf --cacert "$CERTS/ca.crt" -u "$REGISTRY_USER:$password" \
        "https://$REGISTRY/v2/"
    push_test_images "https://$REGISTRY" stevedore/busybox "$password" --cacert "$CERTS/ca.crt"
}

# A registry without TLS, as labs run it. Daemons pull from it over plain HTTP because it is
# on 127.0.0.0/8 (Docker's built-in insecure range); Stevedore must fall back to HTTP too.
start_plain_registry() {
    local dir="$STATE/plain-registry"
    mkdir -p "$dir/data"
    local password
    password=$(cat "$STATE/registry/password")
    if ! pid_alive "$dir/registry.pid"; then
        cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
http:
  addr: $PLAIN_REGISTRY
  secret: stevedore-test-plain-registry
auth:
  htpasswd:
    realm: stevedore-test-plain
    path: $STATE/registry/htpasswd
EOF
        log "starting the plain-HTTP registry on $PLAIN_REGISTRY"
        setsid docker-registry serve "$dir/config.yml" </dev/null >"$dir/registry.log" 2>&1 &
        echo $! >"$dir/registry.pid"
    fi
    wait_for "plain-HTTP registry" curl -sf -u "$REGISTRY_USER:$password" "http://$PLAIN_REGISTRY/v2/"
    push_test_images "http://$PLAIN_REGISTRY" lab/busybox "$password"
}

# push_test_images URL REPOSITORY PASSWORD [CURL_OPTIONS...] — pushes the test images v1
# and v2 to the registry at URL (scheme included) through the main daemon, unless the
# registry already has them.
push_test_images() {
    local url=$1 repository=$2 password=$3
    shift 3
    local registry=${url#*://} version
    for version in v1 v2; do
        if ! curl -sf "$@" -u "$REGISTRY_USER:$password" \
            -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
            "$url/v2/$repository/manifests/$version" >/dev/null; then
            log "pushing $registry/$repository:$version"
            echo "$password" | docker_main login -u "$REGISTRY_USER" --password-stdin \
                "$registry" >/dev/null 2>&1
            docker_main tag "$IMAGE_LOCAL:$version" "$registry/$repository:$version"
            docker_main push -q "$registry/$repository:$version" >/dev/null
            docker_main rmi "$registry/$repository:$version" >/dev/null
        fi
    done
}

# --- ssh ---------------------------------------------------------------------------------

start_sshd() {
    local dir="$STATE/ssh"
    mkdir -p "$dir" /run/sshd
    chmod 700 "$dir"
    [[ -s "$dir/host_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -f "$dir/host_ed25519"
    [[ -s "$dir/id_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -f "$dir/id_ed25519" -C stevedore-test
    cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
    echo "[127.0.0.1]:$SSH_PORT $(cat "$dir/host_ed25519.pub")" >"$dir/known_hosts"
    cat >"$dir/ssh_config" <<EOF
Host stevedore-ssh
    HostName 127.0.0.1
    Port $SSH_PORT
    User root
    IdentityFile $dir/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $dir/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
EOF
    if ! pid_alive "$dir/sshd.pid"; then
        cat >"$dir/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $SSH_PORT
HostKey $dir/host_ed25519
PidFile $dir/sshd.own.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
# ssh:// Docker hosts run 'docker system dial-stdio' remotely; this one reaches daemon d2.
SetEnv DOCKER_HOST=unix://$STATE/d2/docker.sock
EOF
        log "starting sshd on 127.0.0.1:$SSH_PORT"
        # -D keeps it in the foreground so $! is its pid; setsid detaches it from this shell.
        setsid /usr/sbin/sshd -D -f "$dir/sshd_config" </dev/null >"$dir/sshd.log" 2>&1 &
        echo $! >"$dir/sshd.pid"
    fi
    wait_for sshd ssh -F "$dir/ssh_config" stevedore-ssh true
}

# --- env file ----------------------------------------------------------------------------

write_env() {
    cat >"$ENV_FILE.tmp" <<EOF
STEVEDORE_TEST_DIR=$STATE
STEVEDORE_TEST_MAIN_HOST=$MAIN_HOST
STEVEDORE_TEST_SECOND_HOST=unix://$STATE/d2/docker.sock
STEVEDORE_TEST_DOCKER26_HOST=unix://$STATE/d26/docker.sock
STEVEDORE_TEST_PODMAN_HOST=unix://$PODMAN_DIR/podman.sock
STEVEDORE_TEST_TLS_HOST=tcp://127.0.0.1:$TLS_DAEMON_PORT
STEVEDORE_TEST_TLS_UNIX_HOST=unix://$STATE/dtls/docker.sock
STEVEDORE_TEST_CA=$CERTS/ca.crt
STEVEDORE_TEST_CLIENT_CERT=$CERTS/client.crt
STEVEDORE_TEST_CLIENT_KEY=$CERTS/client.key
STEVEDORE_TEST_OTHER_CA=$CERTS/other-ca.crt
STEVEDORE_TEST_SSH_HOST=ssh://root@127.0.0.1:$SSH_PORT
STEVEDORE_TEST_SSH_KEY=$STATE/ssh/id_ed25519
STEVEDORE_TEST_SSH_KNOWN_HOSTS=$STATE/ssh/known_hosts
STEVEDORE_TEST_SSH_CONFIG=$STATE/ssh/ssh_config
STEVEDORE_TEST_REGISTRY=$REGISTRY
STEVEDORE_TEST_REGISTRY_CA=$CERTS/ca.crt
STEVEDORE_TEST_REGISTRY_USER=$REGISTRY_USER
STEVEDORE_TEST_REGISTRY_PASSWORD=$(cat "$STATE/registry/password")
STEVEDORE_TEST_IMAGE_V1=$IMAGE_LOCAL:v1
STEVEDORE_TEST_IMAGE_V2=$IMAGE_LOCAL:v2
STEVEDORE_TEST_REGISTRY_IMAGE_V1=$IMAGE_REMOTE:v1
STEVEDORE_TEST_REGISTRY_IMAGE_V2=$IMAGE_REMOTE:v2
STEVEDORE_TEST_PLAIN_REGISTRY=$PLAIN_REGISTRY
STEVEDORE_TEST_PLAIN_REGISTRY_IMAGE_V1=$PLAIN_REGISTRY/lab/busybox:v1
STEVEDORE_TEST_ROOTFS_V1=$STATE/rootfs-v1.tar
STEVEDORE_TEST_ROOTFS_V2=$STATE/rootfs-v2.tar
EOF
    chmod 600 "$ENV_FILE.tmp"
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# --- commands ----------------------------------------------------------------------------

up() {
    [[ $(id -u) == 0 ]] || die "needs root (starts dockerd and sshd, installs packages)"
    mkdir -p "$STATE"
    chmod 700 "$STATE"
    ensure_packages
    fetch_docker26
    make_certs
    wait_for "main Docker daemon" docker_main version
    make_images
    start_second_daemon
    start_tls_daemon
    start_docker26
    start_podman
    load_images_into "unix://$STATE/d2/docker.sock"
    load_images_into "unix://$STATE/d26/docker.sock"
    load_images_into "unix://$PODMAN_DIR/podman.sock"
    load_images_into "tcp://127.0.0.1:$TLS_DAEMON_PORT" env DOCKER_TLS_VERIFY=1 \
        DOCKER_CERT_PATH="$STATE/tls-client"
    start_registry
    start_plain_registry
    start_sshd
    write_env
    log "ready; addresses in $ENV_FILE"
}

down() {
    stop_pidfile sshd "$STATE/ssh/sshd.pid"
    stop_pidfile "Podman health checks" "$PODMAN_DIR/healthcheck.pid"
    stop_podman_containers
    stop_pidfile "Podman service" "$PODMAN_DIR/service.pid"
    stop_pidfile registry "$STATE/registry/registry.pid"
    stop_pidfile "plain-HTTP registry" "$STATE/plain-registry/registry.pid"
    local name
    for name in d26 dtls d2; do
        stop_pidfile "dockerd $name" "$STATE/$name/dockerd.pid"
        if ip link show "stv-$name" >/dev/null 2>&1; then
            ip link delete "stv-$name" 2>/dev/null || true
        fi
    done
    rm -f "$ENV_FILE"
    log "stopped"
}

# Restarts the second daemon (for fault tests): stop by pid file, start again.
restart_second() {
    stop_pidfile "dockerd d2" "$STATE/d2/dockerd.pid"
    start_second_daemon
}

status() {
    local name pidfile
    for name in d2/dockerd dtls/dockerd d26/dockerd podman/service podman/healthcheck \
        registry/registry plain-registry/registry ssh/sshd; do
        pidfile="$STATE/$name.pid"
        if pid_alive "$pidfile"; then
            echo "$name: running (pid $(cat "$pidfile"))"
        else
            echo "$name: stopped"
        fi
    done
}

case "${1:-}" in
up) up ;;
down) down ;;
restart-second) restart_second ;;
status) status ;;
*)
    echo "usage: $0 up|down|status|restart-second" >&2
    exit 2
    ;;
esac
