#!/usr/bin/env bash
# `make down`: remove the model containers the orchestrator created and the one-off
# containers of `make chat` / `make models` (compose knows neither as part of the
# stack), then the stack itself; then check that nothing of ours is left, and fail
# naming what is, rather than exit 0 over a network still in use.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack-env.sh
project="$COMPOSE_PROJECT_NAME"

# Containers of this stack compose does not take down itself: the models, and one-off
# `compose run` containers (a `make chat` whose terminal closed while it was starting
# can still start its container afterwards).
strays() {
    {
        docker ps -aq --filter "label=io.llamadock.project=$project"
        docker ps -aq --filter "label=com.docker.compose.project=$project" \
            --filter "label=com.docker.compose.oneoff=True"
    } | sort -u
}

remove_strays() {
    local ids
    ids="$(strays)"
    [[ -n "$ids" ]] || return 0
    echo "llamadock: removing $(wc -w <<<"$ids") model / one-off container(s)" >&2
    # shellcheck disable=SC2086
    docker stop -t 10 $ids >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    docker rm -f $ids >/dev/null 2>&1 || true
}

leftovers() {
    docker ps -a --format '{{.Names}}' --filter "label=io.llamadock.project=$project" | sed 's/^/container /'
    docker ps -a --format '{{.Names}}' --filter "label=com.docker.compose.project=$project" | sed 's/^/container /'
    local network users
    for network in $(docker network ls --format '{{.Name}}' --filter "label=com.docker.compose.project=$project"); do
        users="$(docker network inspect -f '{{range .Containers}}{{.Name}} {{end}}' "$network" 2>/dev/null || true)"
        echo "network $network${users:+ (in use by: ${users% })}"
    done
}

# The orchestrator first, so it cannot start a model while we remove them.
bash scripts/compose.sh stop orchestrator >/dev/null 2>&1 || true
remove_strays
status=0
bash scripts/compose.sh down --remove-orphans "$@" || status=$?
# Anything that started while we were at it (a late one-off), then its network.
remove_strays
for network in $(docker network ls -q --filter "label=com.docker.compose.project=$project"); do
    docker network rm "$network" >/dev/null 2>&1 || true
done
# The orchestrator's socket volume holds nothing but the socket: a fresh one comes with `make up`.
for volume in $(docker volume ls -q --filter "label=com.docker.compose.project=$project" \
        --filter "label=com.docker.compose.volume=orchestrator-socket"); do
    docker volume rm "$volume" >/dev/null 2>&1 || true
done

left="$(leftovers | sort -u)"
if [[ -n "$left" ]]; then
    echo "llamadock: make down left these behind (remove them, or see what holds them):" >&2
    sed 's/^/  /' <<<"$left" >&2
    exit 1
fi
exit "$status"
