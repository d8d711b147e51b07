#!/usr/bin/env bash
# Bring up what the Docker tests (tests/docker/) need, on a Debian machine
# that cannot pull from any public container registry:
#
#   1. a Docker engine: the one that answers `docker info`, else docker.io
#      from Debian with dockerd started in the background;
#   2. a local base image (Debian bookworm with python, pip and this
#      machine's CA bundle) for the Dockerfile's BASE_IMAGE build argument;
#   3. a local registry on 127.0.0.1:5001 with a user name and password,
#      the stand-in for Azure Container Registry.
#
# Idempotent: each step is skipped when its result is already there, so a
# second run takes a second or two.
#
# Progress goes to stderr. Stdout carries only `export NAME=value` lines for
# the variables the tests read, so that .ci/run can do
#
#     eval "$(bash .ci/setup-docker.sh)"
#
# The registry's password is not among them: it is the fixed, published test
# password below (like Azurite's well-known key), for a registry that listens
# on loopback only, and tests/docker/conftest.py has the same default. Set
# SUPERBATCH_TEST_REGISTRY_PASSWORD before both to use another.
set -euo pipefail

BASE_IMAGE=${SUPERBATCH_TEST_BASE_IMAGE:-superbatch-base:bookworm}
REGISTRY=${SUPERBATCH_TEST_REGISTRY:-127.0.0.1:5001}
REGISTRY_USER=${SUPERBATCH_TEST_REGISTRY_USERNAME:-superbatch}
REGISTRY_PASSWORD=${SUPERBATCH_TEST_REGISTRY_PASSWORD:-superbatch-test-only}
STATE_DIR=${SUPERBATCH_CI_STATE:-/var/lib/superbatch-ci}  # registry data, logs

log() { echo "[setup-docker] $*" >&2; }

apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        apt-get update -qq >>"$STATE_DIR/apt.log" 2>&1
        apt_updated=1
    fi
    log "apt-get install $* (log: $STATE_DIR/apt.log)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$STATE_DIR/apt.log" 2>&1 \
        || { tail -n 20 "$STATE_DIR/apt.log" >&2; exit 1; }
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq "$seconds"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    log "$what did not come up within ${seconds}s"
    return 1
}

mkdir -p "$STATE_DIR"

# --- 1. the engine -------------------------------------------------------
if docker info >/dev/null 2>&1; then
    log "Docker engine: already running"
else
    if ! command -v dockerd >/dev/null; then
        log "installing docker.io (about a minute)"
        apt_install docker.io
    fi
    log "starting dockerd (log: $STATE_DIR/dockerd.log)"
    # setsid: the daemon outlives this script and the shell that ran it.
    setsid dockerd >"$STATE_DIR/dockerd.log" 2>&1 </dev/null &
    wait_for 60 "dockerd" docker info
    log "Docker engine: started"
fi

# --- 2. the base image ---------------------------------------------------
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE: already there"
else
    command -v debootstrap >/dev/null || apt_install debootstrap
    rootfs=$(mktemp -d /tmp/superbatch-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "building $BASE_IMAGE with debootstrap (one to four minutes, as fast as the Debian mirror)"
    debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian >"$STATE_DIR/debootstrap.log" 2>&1 \
        || { tail -n 20 "$STATE_DIR/debootstrap.log" >&2; exit 1; }
    # Inside a build, TLS to the package registry verifies only against this
    # machine's own CA bundle.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        -c 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
        -c 'ENV LANG=C.UTF-8' \
        -c 'CMD ["python3"]' \
        - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    log "base image $BASE_IMAGE: built"
fi

# --- 3. the registry -----------------------------------------------------
registry_answers() {
    # An htpasswd registry answers /v2/ with 401 to a client without credentials.
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$REGISTRY/v2/")" = 401 ]
}
if registry_answers; then
    log "registry $REGISTRY: already running"
else
    command -v docker-registry >/dev/null || apt_install docker-registry
    command -v htpasswd >/dev/null || apt_install apache2-utils
    # Only the bcrypt hash is written, never the password itself.
    htpasswd -Bbn "$REGISTRY_USER" "$REGISTRY_PASSWORD" >"$STATE_DIR/htpasswd" 2>/dev/null
    cat >"$STATE_DIR/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE_DIR/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
auth:
  htpasswd:
    realm: superbatch-test
    path: $STATE_DIR/htpasswd
EOF
    log "starting the registry on $REGISTRY (log: $STATE_DIR/registry.log)"
    setsid docker-registry serve "$STATE_DIR/registry.yml" >"$STATE_DIR/registry.log" 2>&1 </dev/null &
    wait_for 30 "the registry" registry_answers
    log "registry $REGISTRY: started"
fi

echo "export SUPERBATCH_TEST_BASE_IMAGE=$BASE_IMAGE"
echo "export SUPERBATCH_TEST_REGISTRY=$REGISTRY"
echo "export SUPERBATCH_TEST_REGISTRY_USERNAME=$REGISTRY_USER"
