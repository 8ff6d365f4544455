#!/usr/bin/env bash
# Sourced by scripts/compose.sh: the host-specific values compose.yaml needs.
#   - LLAMADOCK_UID/GID: the orchestrator and the model servers run as you, so
#     config/models.yaml and downloaded models stay yours;
#   - LLAMADOCK_DOCKER_GID: the Docker socket's group, for the orchestrator only;
#   - LLAMADOCK_ADMIN_TOKEN: generated once into .env (admin endpoints need it).
# Values already set in the environment or in .env win.

env_file_value() { [[ -f .env ]] && sed -n "s/^$1=//p" .env | tail -n1; return 0; }

export LLAMADOCK_UID="${LLAMADOCK_UID:-$(env_file_value LLAMADOCK_UID)}"
export LLAMADOCK_UID="${LLAMADOCK_UID:-$(id -u)}"
export LLAMADOCK_GID="${LLAMADOCK_GID:-$(env_file_value LLAMADOCK_GID)}"
export LLAMADOCK_GID="${LLAMADOCK_GID:-$(id -g)}"
socket="${DOCKER_HOST:-unix:///var/run/docker.sock}"
socket="${socket#unix://}"
export LLAMADOCK_DOCKER_GID="${LLAMADOCK_DOCKER_GID:-$(stat -c %g "$socket" 2>/dev/null || echo 0)}"

if [[ -z "${LLAMADOCK_ADMIN_TOKEN:-}" && -z "$(env_file_value LLAMADOCK_ADMIN_TOKEN)" ]]; then
    token="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
    { [[ -s .env && -n "$(tail -c1 .env)" ]] && echo; echo "LLAMADOCK_ADMIN_TOKEN=$token"; } >> .env
    chmod 600 .env
    echo "llamadock: wrote a new admin token to .env (LLAMADOCK_ADMIN_TOKEN)" >&2
fi
export LLAMADOCK_ADMIN_TOKEN="${LLAMADOCK_ADMIN_TOKEN:-$(env_file_value LLAMADOCK_ADMIN_TOKEN)}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-$(env_file_value COMPOSE_PROJECT_NAME)}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-llamadock}"

# Saved KV caches: beside the downloads, under the models/ in use, unless set.
models_dir="${LLAMADOCK_MODELS_DIR:-$(env_file_value LLAMADOCK_MODELS_DIR)}"
models_dir="${models_dir:-models}"
export LLAMADOCK_KV_CACHE_DIR="${LLAMADOCK_KV_CACHE_DIR:-$(env_file_value LLAMADOCK_KV_CACHE_DIR)}"
export LLAMADOCK_KV_CACHE_DIR="${LLAMADOCK_KV_CACHE_DIR:-$models_dir/.cache/kv}"
# Compose reads a volume source that starts with neither / nor . as a named volume ("refers to
# undefined volume models/.cache/kv"): a relative path is made ./-relative.
case "$LLAMADOCK_KV_CACHE_DIR" in /*|.*) ;; *) export LLAMADOCK_KV_CACHE_DIR="./$LLAMADOCK_KV_CACHE_DIR" ;; esac

# Bind-mount sources must exist, or Docker creates them owned by root.
mkdir -p "$models_dir/.cache" "${LLAMADOCK_LOGS_DIR:-logs}/sessions" "$LLAMADOCK_KV_CACHE_DIR"
