#!/usr/bin/env bash
# `make up`: build what is missing, start the stack with the overrides this host
# needs (GPU, WSL2), wait until every service is healthy, then say where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack-env.sh

python_image="${LLAMADOCK_PYTHON_IMAGE:-python:3.11-slim-bookworm}"
# The official base image when a registry is reachable; a local stand-in otherwise.
if ! docker image inspect "$python_image" >/dev/null 2>&1; then
    if ! timeout 120 docker pull -q "$python_image" >/dev/null 2>&1; then
        echo "llamadock: cannot pull $python_image: building a local stand-in (scripts/make-base-images.sh)" >&2
        bash scripts/make-base-images.sh
    fi
fi

# Your catalogs, created from the tracked examples on first use (git ignores them,
# so `git pull` never conflicts with your models). An existing file is never touched.
config_dir="${LLAMADOCK_CONFIG_DIR:-config}"
mkdir -p "$config_dir"
for name in models upstreams chat; do
    if [[ ! -e "$config_dir/$name.yaml" ]]; then
        cp config/$name.example.yaml "$config_dir/$name.yaml"
        echo "llamadock: created $config_dir/$name.yaml from config/$name.example.yaml" >&2
    fi
done

# Swarm mode: this engine must manage a swarm that has the overlay, or compose's error would be
# only "network declared as external, but could not be found".
backend="${LLAMADOCK_BACKEND:-$(env_file_value LLAMADOCK_BACKEND)}"
if [[ ${backend:-engine} == swarm ]]; then
    overlay="${LLAMADOCK_SWARM_NETWORK:-$(env_file_value LLAMADOCK_SWARM_NETWORK)}"
    overlay="${overlay:-llamadock}"
    if [[ "$(docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" != true ]]; then
        echo "llamadock: LLAMADOCK_BACKEND=swarm needs this engine to be a swarm manager: run \`make swarm-init\` first" >&2
        exit 1
    fi
    if [[ "$(docker network inspect "$overlay" --format '{{.Driver}} {{.Attachable}}' 2>/dev/null)" != "overlay true" ]]; then
        echo "llamadock: no attachable overlay network '$overlay': run \`make swarm-init\` (LLAMADOCK_SWARM_NETWORK names another)" >&2
        exit 1
    fi
fi

# Built first, then started: `up --build` labels each container with the build's digest, which is
# not the image ID the next compose command (`make add`, `make ps`: `compose run`) compares it with,
# so that command would recreate the gateway and orchestrator, dropping every connection.
bash scripts/compose.sh build
bash scripts/compose.sh up -d --wait --wait-timeout 120

port="${LLAMADOCK_PORT:-$(env_file_value LLAMADOCK_PORT)}"
bind="${LLAMADOCK_BIND:-$(env_file_value LLAMADOCK_BIND)}"
url="http://${bind:-127.0.0.1}:${port:-8080}"

# A static upstream or provider on one of the stack's own ports would route chats back into the
# stack (the old example pointed at 127.0.0.1:8081, the orchestrator's port here): say so.
# Checked by the gateway's own code, in its container (the host may have no Python packages).
bash scripts/compose.sh exec -T gateway python -m gateway.routes.own_ports /app/config/upstreams.yaml \
    --port "gateway=${port:-8080}" || true
cat <<MSG

llamadock is up.
  OpenAI API   $url/v1          (e.g. curl $url/v1/models)
  Swagger      $url/docs
  GPU status   $url/gpu
  Metrics      $url/metrics
  Admin token  in .env (LLAMADOCK_ADMIN_TOKEN), for /admin/* and \`make add\`

Add a model:   make add NAME=gemma3 MODEL=ggml-org/gemma-3-1b-it-GGUF:Q4_K_M
               make add NAME=mine MODEL=my-model.gguf      (a file in models/)
MSG
