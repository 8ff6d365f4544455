#!/usr/bin/env bash
# `make llama-image`: build llama-server from source into a local image (no
# registry needed: the source comes from PyPI) and make new models use it.
#   GPU mode detected as for `make up`: CUDA (needs the nvidia/cuda base images)
#   or CPU.  Override: LLAMADOCK_GPU=none|nvidia, CUDA_ARCHITECTURES="86;89".
# Writes LLAMADOCK_LLAMA_IMAGE_CPU or _GPU into .env; `make up` applies it.
set -euo pipefail
cd "$(dirname "$0")/.."

if bash scripts/compose-files.sh 2>/dev/null | grep -q compose.gpu.yaml; then
    image=llamadock/llama-server:cuda key=LLAMADOCK_LLAMA_IMAGE_GPU
    cuda=(--build-arg BUILD_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu24.04
          --build-arg RUNTIME_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
          --build-arg GGML_CUDA=ON --build-arg "CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES:-75;80;86;89;90}")
else
    image=llamadock/llama-server:cpu key=LLAMADOCK_LLAMA_IMAGE_CPU cuda=()
fi
echo "llama-image: building $image from source (CPU: ~10 min on 2 cores; CUDA: longer)" >&2
docker build -f docker/llama-server.Dockerfile -t "$image" "${cuda[@]}" .

touch .env
grep -v "^$key=" .env > .env.tmp || true
echo "$key=$image" >> .env.tmp
mv .env.tmp .env && chmod 600 .env   # it holds the admin token
echo "llama-image: $image built; .env now has $key=$image (run \`make up\` to apply)." >&2
