#!/usr/bin/env bash
# Build llama-server for the CPU from the llama.cpp tree vendored in the
# llama-cpp-python sdist (PyPI is reachable where GitHub is not), once per
# machine: the result is cached outside the repo, keyed by version.
#
#   scripts/build-llama-server.sh            # prints the path of the binary
#   LLAMA_CPP_PYTHON_VERSION=0.3.36 LLAMADOCK_CACHE=~/.cache/llamadock ...
#   LLAMA_BUILD_CUDA=1 [CUDA_ARCHITECTURES=90] ...   # CUDA build (needs nvcc), with
#                                             # llama-quantize next to it (scripts/gpu-check.sh)
set -euo pipefail

version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${LLAMADOCK_CACHE:-$HOME/.cache/llamadock}"
dest="$cache/llama-server-$version"
flags=(-DGGML_NATIVE=OFF) targets=(llama-server)
if [[ "${LLAMA_BUILD_CUDA:-0}" == 1 ]]; then
    arch="${CUDA_ARCHITECTURES:-native}"
    dest="$cache/llama-server-$version-cuda-${arch//;/_}"
    flags=(-DGGML_NATIVE=ON -DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$arch")
    targets=(llama-server llama-quantize)
fi
bin="$dest/bin/llama-server"

if [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.build-llama-server.lock"
flock 9                                   # two concurrent callers build once
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi

work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: \
    -d "$work" "llama-cpp-python==$version" >&2
tar -C "$work" -xzf "$work"/llama_cpp_python-"$version".tar.gz
src="$work/llama_cpp_python-$version/vendor/llama.cpp"

cmake -S "$src" -B "$work/build" "${flags[@]}" -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release >&2
cmake --build "$work/build" --target "${targets[@]}" -j"$(nproc)" >&2

mkdir -p "$dest.tmp/bin" "$dest.tmp/vocab"
for t in "${targets[@]}"; do cp "$work/build/bin/$t" "$dest.tmp/bin/"; done
cp "$src"/models/ggml-vocab-llama-spm.gguf "$dest.tmp/vocab/"
rm -rf "$dest" && mv "$dest.tmp" "$dest"      # appear whole or not at all
echo "$bin"
