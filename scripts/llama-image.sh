#!/usr/bin/env bash
# `make llama-image [GPU=1]`: build llama-server from source into a local image
# (no registry needed for the source: it comes from PyPI) and make new models use it.
#   GPU=1 (or LLAMADOCK_GPU=nvidia): the CUDA image; GPU=0 / LLAMADOCK_GPU=none: CPU;
#   unset: detected as for `make up`.
#   CUDA_ARCHITECTURES="86;89" (default "75;80;86;89;90"; add 100/120 for Blackwell),
#   CUDA_BUILD_IMAGE / CUDA_RUNTIME_IMAGE: the nvidia/cuda devel and runtime base images.
# Writes LLAMADOCK_LLAMA_IMAGE_CPU or _GPU into .env; `make up` applies it.
#   --dry-run: print the docker build command instead of running it.
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry=1 ;;
        *) echo "llama-image: unknown argument $arg (usage: llama-image.sh [--dry-run])" >&2; exit 2 ;;
    esac
done

mode="${GPU:-}"
case "${LLAMADOCK_GPU:-}" in nvidia) mode="${mode:-1}" ;; none) mode="${mode:-0}" ;; esac
if [[ -z "$mode" ]]; then
    mode=0
    bash scripts/compose-files.sh 2>/dev/null | grep -q compose.gpu.yaml && mode=1
fi
case "$mode" in 1|0) ;; *) echo "llama-image: GPU must be 1 or 0, not '$mode'" >&2; exit 2 ;; esac

build_image="${CUDA_BUILD_IMAGE:-nvidia/cuda:12.8.1-devel-ubuntu24.04}"
runtime_image="${CUDA_RUNTIME_IMAGE:-nvidia/cuda:12.8.1-runtime-ubuntu24.04}"
archs="${CUDA_ARCHITECTURES:-75;80;86;89;90}"
if [[ "$mode" == 1 ]]; then
    [[ "$archs" =~ ^(native|[0-9]{2,3}[a-z]?(;[0-9]{2,3}[a-z]?)*)$ ]] || {
        echo "llama-image: CUDA_ARCHITECTURES must look like '86;89;90', not '$archs'" >&2; exit 2; }
    image=llamadock/llama-server:cuda key=LLAMADOCK_LLAMA_IMAGE_GPU
    build_args=(--build-arg "BUILD_IMAGE=$build_image" --build-arg "RUNTIME_IMAGE=$runtime_image"
                --build-arg GGML_CUDA=ON --build-arg "CUDA_ARCHITECTURES=$archs")
else
    image=llamadock/llama-server:cpu key=LLAMADOCK_LLAMA_IMAGE_CPU build_args=()
fi
cmd=(docker build -f docker/llama-server.Dockerfile --target server -t "$image" "${build_args[@]}" .)
if [[ "$dry" == 1 ]]; then
    printf '%q ' "${cmd[@]}"; echo
    exit 0
fi

if [[ "$mode" == 1 ]]; then   # a clear message, not a registry error 40 lines into the build
    for base in "$build_image" "$runtime_image"; do
        if ! docker image inspect "$base" >/dev/null 2>&1 && ! docker pull "$base" >/dev/null 2>&1; then
            echo "llama-image: the CUDA base image $base is not here and cannot be pulled." >&2
            echo "  Load it (docker load < file.tar, saved on a connected machine with docker save)," >&2
            echo "  or name another with CUDA_BUILD_IMAGE= / CUDA_RUNTIME_IMAGE=." >&2
            exit 1
        fi
    done
fi
echo "llama-image: building $image from source (CPU: ~10 min on 2 cores; CUDA: longer, per architecture)" >&2
"${cmd[@]}"

touch .env
grep -v "^$key=" .env > .env.tmp || true
echo "$key=$image" >> .env.tmp
mv .env.tmp .env && chmod 600 .env   # it holds the admin token
echo "llama-image: $image built; .env now has $key=$image (run \`make up\` to apply)." >&2
