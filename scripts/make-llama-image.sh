#!/usr/bin/env bash
# The local CPU llama-server image for tests and CI, made from the host's
# llama-server (scripts/build-llama-server.sh, cached per machine) instead of
# a second ~7 min compile inside Docker.  Skipped when the image's labels
# name this binary and this Dockerfile (their sha256): ~0.1 s when warm.
#
#   bash scripts/make-llama-image.sh        # prints the image name
#   LLAMADOCK_LLAMA_IMAGE=NAME:TAG ...      # another name
set -euo pipefail

image="${LLAMADOCK_LLAMA_IMAGE:-llamadock/llama-server:local-cpu}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { echo "make-llama-image: $*" >&2; }

bin="$("$root/scripts/build-llama-server.sh")"
dockerfile="$root/docker/llama-server.Dockerfile"
bin_sum="$(sha256sum "$bin" | cut -d' ' -f1)"
df_sum="$(sha256sum "$dockerfile" | cut -d' ' -f1)"

have="$(docker image inspect "$image" -f \
        '{{index .Config.Labels "io.llamadock.binary-sha256"}} {{index .Config.Labels "io.llamadock.dockerfile-sha256"}}' \
        2>/dev/null || true)"
if [[ "$have" == "$bin_sum $df_sum" ]]; then
    log "$image: up to date (same binary, same Dockerfile)"
    echo "$image"
    exit 0
fi

# A context holding only the binary: the repo root would send far more.
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/llama-server"
log "$image: building from $bin"
docker build --quiet --target prebuilt \
    --build-arg BINARY_SHA256="$bin_sum" --build-arg DOCKERFILE_SHA256="$df_sum" \
    -t "$image" -f "$dockerfile" "$ctx" >&2
echo "$image"
