#!/usr/bin/env bash
# Bring up what the Docker tests (tests/docker/) need, on a Debian machine
# that cannot pull from any public container registry:
#
#   1. a Docker engine: the one that answers `docker info`, else docker.io
#      from Debian with dockerd started in the background;
#   2. a local base image (Debian bookworm with python, pip and this
#      machine's CA bundle) for the Dockerfile's BASE_IMAGE build argument;
#   3. a local registry on 127.0.0.1:5001 with a user name and password,
#      the stand-in for Azure Container Registry;
#   4. R for the R worker of examples/r/: Debian's r-base-core and
#      r-cran-jsonlite (no recommends) on this machine, for the local
#      backend, and an R base image (the base image plus the same packages)
#      for its worker image.
#
# Idempotent: each step is skipped when its result is already there, so a
# second run takes a second or two.
#
# Progress goes to stderr. Stdout carries only `export NAME=value` lines for
# the variables the tests read, so that .ci/run can do
#
#     eval "$(bash .ci/setup-docker.sh)"
#
# Debian packages come from the mirror this machine's apt already uses (its
# apt sources), so no mirror is named here; `bash .ci/setup-docker.sh
# --mirror` prints the one it finds.
#
# The registry's password is not among them: it is the fixed, published test
# password below (like Azurite's well-known key), for a registry that listens
# on loopback only, and tests/docker/conftest.py has the same default. Set
# SUPERBATCH_TEST_REGISTRY_PASSWORD before both to use another.
set -euo pipefail

BASE_IMAGE=${SUPERBATCH_TEST_BASE_IMAGE:-superbatch-base:bookworm}
R_BASE_IMAGE=${SUPERBATCH_TEST_R_BASE_IMAGE:-superbatch-r-base:bookworm}
R_PACKAGES="r-base-core r-cran-jsonlite"
REGISTRY=${SUPERBATCH_TEST_REGISTRY:-127.0.0.1:5001}
REGISTRY_USER=${SUPERBATCH_TEST_REGISTRY_USERNAME:-superbatch}
REGISTRY_PASSWORD=${SUPERBATCH_TEST_REGISTRY_PASSWORD:-superbatch-test-only}
STATE_DIR=${SUPERBATCH_CI_STATE:-/var/lib/superbatch-ci}  # registry data, logs

SUITE=bookworm

log() { echo "[setup-docker] $*" >&2; }

# The URI of this machine's apt source for Debian $1: a deb822 stanza
# (/etc/apt/sources.list.d/*.sources: Types, URIs, Suites, Enabled) or a
# one-line `deb [options] URI suite components` entry (sources.list, *.list).
# A source that lists the suite itself wins; else one of a main archive (a
# suite without a dash: not -security, -updates), since a Debian mirror
# carries every release. Prints nothing when there is none.
debian_mirror() {
    local files=()
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    awk -v want="$1" '
        function consider(type, uri, suites,    n, i, s) {
            if (type != "deb" || uri !~ /^(https?|ftp|file):/) return
            n = split(suites, s, " ")
            for (i = 1; i <= n; i++) {
                if (s[i] == want && exact == "") exact = uri
                if (s[i] !~ /-/ && plain == "") plain = uri
            }
        }
        function flush(    n, t, u, i) {
            if (enabled != "no" && uris != "") {
                n = split(types, t, " "); split(uris, u, " ")
                for (i = 1; i <= n; i++) consider(t[i], u[1], suites)
            }
            types = uris = suites = enabled = field = ""
        }
        FNR == 1 { flush() }
        FILENAME ~ /\.sources$/ {
            if ($0 ~ /^[ \t]*#/) next
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            if ($0 ~ /^[ \t]/) { value = $0 }                     # a continuation line
            else { field = tolower($0); sub(/:.*/, "", field); value = $0; sub(/^[^:]*:/, "", value) }
            if (field == "types") types = types " " value
            else if (field == "uris") uris = uris " " value
            else if (field == "suites") suites = suites " " value
            else if (field == "enabled") { enabled = tolower(value); gsub(/[ \t]/, "", enabled) }
            next
        }
        {   # one-line format; options in brackets may hold spaces
            line = $0; sub(/#.*/, "", line); gsub(/\[[^]]*\]/, " ", line)
            n = split(line, w, " ")
            if (n >= 3) consider(w[1], w[2], w[3])
        }
        END { flush(); if (exact != "") print exact; else if (plain != "") print plain }
    ' "${files[@]}"
}

if [ "${1:-}" = "--mirror" ]; then
    debian_mirror "$SUITE"
    exit 0
fi

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
    mirror=$(debian_mirror "$SUITE")
    if [ -z "$mirror" ]; then
        log "no Debian mirror in this machine's apt sources (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list);"
        log "debootstrap needs one to build $BASE_IMAGE: add a 'deb' source for Debian and run again"
        exit 1
    fi
    command -v debootstrap >/dev/null || apt_install debootstrap
    rootfs=$(mktemp -d /tmp/superbatch-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    log "building $BASE_IMAGE with debootstrap from $mirror (one to four minutes, as fast as the mirror)"
    debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
        "$SUITE" "$rootfs" "$mirror" >"$STATE_DIR/debootstrap.log" 2>&1 \
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

# --- 4. R -----------------------------------------------------------------
if Rscript -e 'library(jsonlite)' >/dev/null 2>&1; then
    log "R with jsonlite on this machine: already there"
else
    # shellcheck disable=SC2086
    apt_install $R_PACKAGES
fi
if docker image inspect "$R_BASE_IMAGE" >/dev/null 2>&1; then
    log "R base image $R_BASE_IMAGE: already there"
else
    mirror=$(debian_mirror "$SUITE")
    [ -n "$mirror" ] || { log "no Debian mirror in this machine's apt sources: $R_BASE_IMAGE needs one"; exit 1; }
    log "building $R_BASE_IMAGE: $BASE_IMAGE with $R_PACKAGES (log: $STATE_DIR/r-base.log)"
    printf '%s\n' "FROM $BASE_IMAGE" "ARG MIRROR" \
        'RUN echo "deb $MIRROR '"$SUITE"' main" >/etc/apt/sources.list && apt-get update' \
        "RUN DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $R_PACKAGES && rm -rf /var/lib/apt/lists/*" \
        | docker build --build-arg MIRROR="$mirror" -t "$R_BASE_IMAGE" - >"$STATE_DIR/r-base.log" 2>&1 \
        || { tail -n 20 "$STATE_DIR/r-base.log" >&2; exit 1; }
    log "R base image $R_BASE_IMAGE: built"
fi

echo "export SUPERBATCH_TEST_BASE_IMAGE=$BASE_IMAGE"
echo "export SUPERBATCH_TEST_R_BASE_IMAGE=$R_BASE_IMAGE"
echo "export SUPERBATCH_TEST_REGISTRY=$REGISTRY"
echo "export SUPERBATCH_TEST_REGISTRY_USERNAME=$REGISTRY_USER"
