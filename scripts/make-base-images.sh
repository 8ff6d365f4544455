#!/usr/bin/env bash
# Local stand-ins for the official base images our Dockerfiles start FROM, for
# machines that reach no container registry (dev boxes, CI).  Each is made
# from a debootstrap rootfs only when no image of that name exists, so a real
# pulled image is never replaced.  Rootfs tarballs are cached, keyed by name,
# so a fresh daemon (or `docker system prune -a`) re-imports in seconds.
#
#   bash scripts/make-base-images.sh        # needs scripts/setup-docker.sh first
set -euo pipefail

log() { echo "make-base-images: $*" >&2; }

cache="${LLAMADOCK_CACHE:-$HOME/.cache/llamadock}/rootfs"
mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
host_bundle=/etc/ssl/certs/ca-certificates.crt
ca_sum="$(sha256sum "$host_bundle" | cut -c1-16)"
mkdir -p "$cache/debs"
exec 9>"$cache/.lock"
flock 9                          # parallel callers bootstrap once

# HTTPS from this machine goes through an intercepting proxy whose CA exists
# only in the host's trust store (and may change per machine), so the CA is
# added at import time, not baked into the cached rootfs.  The image carries
# the bundle's hash; a stand-in made with another CA is re-imported.
env_changes=(
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --change 'ENV LANG=C.UTF-8'
    --change "ENV SSL_CERT_FILE=$host_bundle"
    --change "ENV REQUESTS_CA_BUNDLE=$host_bundle"
    --change "ENV PIP_CERT=$host_bundle"
    --change "LABEL llamadock.stand-in=1 llamadock.ca-sha256=$ca_sum"
)
# pip here uses PyPI itself (extra indexes/find-links are file:// paths that a
# build cannot see); carry a network index or proxy only if one is configured.
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL HTTP_PROXY HTTPS_PROXY NO_PROXY \
           http_proxy https_proxy no_proxy; do
    val="${!var:-}"
    [[ -n "$val" && "$val" != *file://* ]] && env_changes+=(--change "ENV $var=$val")
done

make_image() {    # NAME  CMD-JSON  EXTRA-PACKAGES
    local name="$1" cmd="$2" include="$3"
    local tarball="$cache/${name//[:\/]/_}.tar"
    if docker image inspect "$name" >/dev/null 2>&1; then
        local sum
        sum="$(docker image inspect -f '{{index .Config.Labels "llamadock.ca-sha256"}}' "$name")"
        case "$sum" in
            "$ca_sum") log "$name: present"; return ;;
            ""|"<no value>") log "$name: present (not a stand-in), kept"; return ;;
            *) log "$name: stand-in made with another CA bundle, re-importing" ;;
        esac
    fi

    if [[ ! -s "$tarball" ]]; then
        log "$name: debootstrap bookworm from $mirror (about a minute)"
        local root; root="$(mktemp -d)"
        debootstrap --variant=minbase --include="$include" \
            --cache-dir="$cache/debs" bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
            || { tail -n 20 "$cache/debootstrap.log" >&2; rm -rf "$root"; exit 1; }
        # Same apt sources as the host (adds -updates and -security), and the
        # shape of the official images: empty apt lists, `python` on PATH,
        # and pip allowed outside a venv (no PEP 668 marker).
        cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
        rm -f "$root/etc/apt/sources.list" "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
        [[ -e "$root/usr/bin/python3" ]] && ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
        [[ -e "$root/usr/bin/pip3" ]] && ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
        # The CA bundle is left out: it is added per import (docker import
        # rejects a tar holding one path twice).
        tar -C "$root" --numeric-owner --exclude=./etc/ssl/certs/ca-certificates.crt \
            -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"             # whole or not at all
        rm -rf "$root"
    fi

    log "$name: importing $tarball with the host CA bundle"
    local work; work="$(mktemp -d)"
    # Host bundle as the system bundle, and the host's local CAs where
    # update-ca-certificates finds them, so a rebuilt bundle keeps them.
    mkdir -p "$work/ca/etc/ssl/certs" "$work/ca/usr/local/share/ca-certificates"
    cp "$host_bundle" "$work/ca/etc/ssl/certs/ca-certificates.crt"
    cp /usr/local/share/ca-certificates/*.crt "$work/ca/usr/local/share/ca-certificates/" 2>/dev/null || true
    cp "$tarball" "$work/rootfs.tar"
    (cd "$work/ca" && find . -type f -print0 |
        tar --owner=0 --group=0 --null -T - -rf "$work/rootfs.tar")
    docker import "${env_changes[@]}" --change "CMD $cmd" "$work/rootfs.tar" "$name" >/dev/null
    rm -rf "$work"
}

make_image debian:bookworm-slim '["bash"]' ca-certificates
make_image python:3.11-slim-bookworm '["python3"]' ca-certificates,python3,python3-venv,python3-pip,curl
