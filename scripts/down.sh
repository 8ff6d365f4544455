#!/usr/bin/env bash
# `make down`: remove the model containers the orchestrator created (in swarm mode, its
# model services, on every node) and the one-off containers of `make chat` / `make models`
# (compose knows none of them as part of the stack), then the stack itself; then check that
# nothing of ours is left, and fail naming what is, rather than exit 0 over a network still
# in use. The overlay network `make swarm-init` made stays: it belongs to the swarm (other
# boxes' nodes use it too); `docker network rm llamadock` removes it.
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

# Swarm mode: the model services and the node agent carry the project label (their tasks' containers another one,
# so that the engine backend never takes them for its own). Only a manager can list services.
manager() { [[ "$(docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" == true ]]; }
services() { manager && docker service ls -q --filter "label=io.llamadock.project=$project"; return 0; }
tasks() { docker ps -aq --filter "label=io.llamadock.swarm-project=$project"; }

# True while a task of these services (full IDs, one a line) is still on a Ready node: after
# `docker service rm`, each node removes its tasks' containers (old exited ones too), and the
# manager lists the tasks until it has. Any desired state: right after the removal a task may not
# be marked "remove" yet. A node that is down removes its own when it returns; nothing can wait for that.
tasks_on_nodes() {
    local nodes pending
    nodes="$(docker node ls --format '{{.ID}} {{.Status}}' | awk '$2 == "Ready" {print $1}')"
    [[ -n "$nodes" ]] || return 1
    # shellcheck disable=SC2086
    pending="$(docker node ps $nodes -q 2>/dev/null | sort -u)" || return 1
    [[ -n "$pending" ]] || return 1
    # shellcheck disable=SC2086
    docker inspect --format '{{.ServiceID}}' $pending 2>/dev/null | grep -qxF -f <(printf '%s\n' "$1")
}

remove_services() {
    local ids full
    ids="$(services)"
    [[ -n "$ids" ]] || return 0
    echo "llamadock: removing $(wc -w <<<"$ids") service(s): the models and the node agent" >&2
    # shellcheck disable=SC2086
    full="$(docker service inspect --format '{{.ID}}' $ids 2>/dev/null || true)"
    # shellcheck disable=SC2086
    docker service rm $ids >/dev/null 2>&1 || true
    # Swarm stops their tasks after it answers: wait until every Ready node's have gone (the grace
    # period, then SIGKILL), so the overlay and the memory are free when we return.
    local deadline=$((SECONDS + 60))
    while { [[ -n "$(tasks)" ]] || { [[ -n "$full" ]] && tasks_on_nodes "$full"; }; } && [[ $SECONDS -lt $deadline ]]; do
        sleep 0.5
    done
}

leftovers() {
    services | sed 's/^/service /'
    docker ps -a --format '{{.Names}}' --filter "label=io.llamadock.swarm-project=$project" | sed 's/^/container /'
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
remove_services
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
