# llama-server, one per model container: a stand-in for the official images
# ghcr.io/ggml-org/llama.cpp:server(-cuda)-b11312 (same llama.cpp commit,
# 0c1e57098, as vendored in llama-cpp-python 0.3.36), with the same
# ENTRYPOINT, WORKDIR, LLAMA_ARG_HOST, port 8080, curl and HEALTHCHECK.
#
# CPU, from source (~7 min on 2 cores), from the repo root:
#   docker build -f docker/llama-server.Dockerfile -t llamadock/llama-server:cpu .
# CUDA, from source (nvcc needs no GPU at build time; `make llama-image GPU=1` runs this):
#   docker build -f docker/llama-server.Dockerfile -t llamadock/llama-server:cuda \
#     --build-arg BUILD_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu24.04 \
#     --build-arg RUNTIME_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#     --build-arg GGML_CUDA=ON --build-arg CUDA_ARCHITECTURES="75;80;86;89;90" .
# Prebuilt (tests/CI; what scripts/make-llama-image.sh does): a context
# holding only a `llama-server` binary, e.g. from scripts/build-llama-server.sh:
#   docker build --target prebuilt -f docker/llama-server.Dockerfile -t IMAGE CTX
#
# Stage order matters: Docker 20.10's legacy builder (no BuildKit) builds
# every stage up to the target, so `prebuilt` comes before the slow `build`.
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BUILD_IMAGE=debian:bookworm-slim

FROM ${RUNTIME_IMAGE} AS runtime
# curl also pulls in libssl3, which a from-source build links for -hf (HTTPS).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libgomp1 curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# The port is pinned because upstream means to move the default to 9931
# (llama.cpp PR 26508; this build warns about it), and the HEALTHCHECK below,
# copied from the official image, assumes 8080.  --port still wins over it.
ENV LLAMA_ARG_HOST=0.0.0.0 \
    LLAMA_ARG_PORT=8080
WORKDIR /app
EXPOSE 8080
HEALTHCHECK CMD [ "curl", "-f", "http://localhost:8080/health" ]
ENTRYPOINT [ "/app/llama-server" ]

FROM runtime AS prebuilt
# Labels that let scripts/make-llama-image.sh skip an up-to-date image.
ARG BINARY_SHA256=
ARG DOCKERFILE_SHA256=
LABEL io.llamadock.binary-sha256=$BINARY_SHA256 \
      io.llamadock.dockerfile-sha256=$DOCKERFILE_SHA256
# Globs, because this stage also runs when building `server` from the repo
# root, which has no llama-server: a COPY must match at least one file, and
# the Dockerfile is the one always there (it lands as a stray file in /app,
# in a stage nobody uses then).  Given BINARY_SHA256, the binary must match.
COPY llama-serve[r] docker/llama-server.Dockerfil[e] /app/
RUN rm -f /app/llama-server.Dockerfile \
 && if [ -n "$BINARY_SHA256" ]; then echo "$BINARY_SHA256  /app/llama-server" | sha256sum -c -; fi

FROM ${BUILD_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake git ca-certificates libssl-dev python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
# The source is the llama.cpp tree vendored in the llama-cpp-python sdist
# (PyPI), so no GitHub access is needed.  Its .git is a one-commit shallow
# clone, so the build number (what --version and the web UI's download use)
# is given here: b11312 is 0c1e57098, the commit 0.3.36 vendors.
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
ARG LLAMA_BUILD_NUMBER=11312
WORKDIR /src
# --no-binary for this package only: with :all:, pip would build its build
# backend (scikit-build-core, hatchling, ...) from source just to read metadata.
RUN python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python \
        "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" \
 && tar -xzf "llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz" \
 && mv "llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}" lcp \
 && rm "llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz"
ARG GGML_CUDA=OFF
ARG CUDA_ARCHITECTURES="75;80;86;89;90"
# GGML_NATIVE=OFF: portable (AVX2 baseline), not tuned to the build machine.
# LLAMA_OPENSSL (default ON) gives the built-in HTTP client HTTPS: -hf works;
# without libssl-dev that is only a cmake warning, hence the ldd check.
# CUDA: libcuda.so.1 comes from the driver at run time, hence
# --allow-shlib-undefined at link time (as the official CUDA image does).
RUN set -eux; cuda=""; \
    if [ "$GGML_CUDA" = "ON" ]; then \
        cuda="-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES} -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined"; \
    fi; \
    cmake -S lcp/vendor/llama.cpp -B build -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=ON \
        -DLLAMA_BUILD_NUMBER="${LLAMA_BUILD_NUMBER}" $cuda; \
    cmake --build build --target llama-server -j"$(nproc)"; \
    ldd build/bin/llama-server | grep -q libssl; \
    install -D build/bin/llama-server /out/llama-server

FROM runtime AS server
COPY --from=build /out/llama-server /app/llama-server
