#!/usr/bin/env bash
# Local stand-ins for the official base images our Dockerfiles start FROM, for
# machines that reach no container registry (dev boxes, CI).  Each is made
# from a debootstrap rootfs only when no image of that name exists, so a real
# pulled image is never replaced.  Rootfs tarballs are cached, keyed by name,
# so a fresh daemon (or `docker system prune -a`) re-imports in seconds.
#
#   bash scripts/make-base-images.sh        # needs scripts/setup-docker.sh first
set -euo pipefail

# name -> debootstrap --include list, and the official image's CMD
declare -A include=(
    [debian:bookworm-slim]="ca-certificates"
    [python:3.11-slim-bookworm]="ca-certificates,python3,python3-venv,python3-pip,curl"
)
declare -A cmd=(
    [debian:bookworm-slim]='["bash"]'
    [python:3.11-slim-bookworm]='["python3"]'
)

log() { echo "make-base-images: $*" >&2; }

cache="${LLAMADOCK_CACHE:-$HOME/.cache/llamadock}/rootfs"
mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
host_bundle=/etc/ssl/certs/ca-certificates.crt
ca_sum="$(sha256sum "$host_bundle" | cut -c1-16)"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9                          # parallel callers bootstrap once

tarball_of() { echo "$cache/${1//[:\/]/_}.tar"; }

# HTTPS from here goes through an intercepting proxy whose CA lives only in the
# host's trust store (and may differ per machine), so the CA is added at import
# time, never cached.  The image records the bundle's hash: a stand-in made
# with another bundle is re-imported.
needed=()
for name in "${!include[@]}"; do
    if docker image inspect "$name" >/dev/null 2>&1; then
        sum="$(docker image inspect -f '{{index .Config.Labels "llamadock.ca-sha256"}}' "$name")"
        case "$sum" in
            "$ca_sum") log "$name: present"; continue ;;
            ""|"<no value>") log "$name: present (not a stand-in), kept"; continue ;;
            *) log "$name: stand-in made with another CA bundle, re-importing" ;;
        esac
    fi
    needed+=("$name")
done
((${#needed[@]})) || exit 0

bootstrap() {   # NAME: debootstrap a rootfs into its cached tarball
    local name="$1" tarball root
    tarball="$(tarball_of "$name")"
    root="$(mktemp -d)"
    debootstrap --variant=minbase --include="${include[$name]}" \
        bookworm "$root" "$mirror" >"$tarball.log" 2>&1 \
        || { tail -n 20 "$tarball.log" >&2; rm -rf "$root"; return 1; }
    # Like the official images: host's apt sources (adds -updates, -security),
    # empty apt lists, `python`/`pip` on PATH, pip allowed outside a venv.
    cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
    rm -f "$root/etc/apt/sources.list" "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    if [[ -e "$root/usr/bin/python3" ]]; then
        ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
        ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
    fi
    # The bundle is added per import (docker import rejects a path twice).
    tar -C "$root" --numeric-owner --exclude=./etc/ssl/certs/ca-certificates.crt \
        -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"                 # whole or not at all
    rm -rf "$root"
}

# debootstrap is mostly waiting on dpkg's fsyncs: two at once take ~1.7 min
# instead of ~2.8 one after the other.  (No shared --cache-dir: two
# debootstraps would write the same .deb at once.)
pids=()
for name in "${needed[@]}"; do
    [[ -s "$(tarball_of "$name")" ]] && continue
    log "$name: debootstrap bookworm from $mirror (1-2 min, log: $(tarball_of "$name").log)"
    bootstrap "$name" & pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done

changes=(
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --change 'ENV LANG=C.UTF-8'
    --change "ENV SSL_CERT_FILE=$host_bundle"
    --change "ENV REQUESTS_CA_BUNDLE=$host_bundle"
    --change "ENV PIP_CERT=$host_bundle"
    --change "LABEL llamadock.stand-in=1 llamadock.ca-sha256=$ca_sum"
)
# The host's pip uses PyPI itself (its extra indexes and find-links are file://
# paths no build can see); carry a network index or proxy only if one is set.
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL HTTP_PROXY HTTPS_PROXY NO_PROXY \
           http_proxy https_proxy no_proxy; do
    val="${!var:-}"
    if [[ -n "$val" && "$val" != *file://* ]]; then changes+=(--change "ENV $var=$val"); fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Host bundle as the system bundle, plus the host's local CAs where
# update-ca-certificates looks, so a bundle rebuilt in a derived image keeps them.
mkdir -p "$work/ca/etc/ssl/certs" "$work/ca/usr/local/share/ca-certificates"
cp "$host_bundle" "$work/ca/etc/ssl/certs/ca-certificates.crt"
cp /usr/local/share/ca-certificates/*.crt "$work/ca/usr/local/share/ca-certificates/" 2>/dev/null || true
for name in "${needed[@]}"; do
    log "$name: importing $(tarball_of "$name") with the host CA bundle"
    cp "$(tarball_of "$name")" "$work/rootfs.tar"
    (cd "$work/ca" && find . -type f -print0 |
        tar --owner=0 --group=0 --null -T - -rf "$work/rootfs.tar")
    docker import "${changes[@]}" --change "CMD ${cmd[$name]}" "$work/rootfs.tar" "$name" >/dev/null
done
