#!/usr/bin/env bash
# `make swarm-init`: make this box the manager of a Docker Swarm for llamadock (LLAMADOCK_BACKEND=swarm).
# Each step is skipped when it is done already, so running it again changes nothing.
#
#   1. `docker swarm init` unless this engine is in a swarm (LLAMADOCK_SWARM_ADVERTISE_ADDR picks the
#      address other boxes reach it at, when it has several);
#   2. the attachable overlay network model services join (LLAMADOCK_SWARM_NETWORK, default llamadock);
#   3. this node's memory budget for models, the node label llamadock.memory_mb
#      (LLAMADOCK_NODE_MEMORY_MB; default: 3/4 of the memory Docker reports, unless already labelled);
#   4. models/ and models/.cache here; every node needs them at this same path (or an NFS mount there).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
network="${LLAMADOCK_SWARM_NETWORK:-llamadock}"
models="${LLAMADOCK_MODELS_DIR:-$root/models}"

log() { echo "swarm-init: $*" >&2; }
die() { log "$*"; exit 1; }

state="$(docker info --format '{{.Swarm.LocalNodeState}}')"
if [[ "$state" == "inactive" ]]; then
    args=()
    [[ -n "${LLAMADOCK_SWARM_ADVERTISE_ADDR:-}" ]] && args+=(--advertise-addr "$LLAMADOCK_SWARM_ADVERTISE_ADDR")
    out="$(docker swarm init "${args[@]}" 2>&1)" || die "docker swarm init failed: $out
  (a box with several addresses needs one chosen: LLAMADOCK_SWARM_ADVERTISE_ADDR=<address> make swarm-init)"
    log "this engine now manages a new swarm"
elif [[ "$state" != "active" ]]; then
    die "this engine's swarm state is '$state'; wait for it to settle, or leave with \`docker swarm leave\`"
fi
[[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" == "true" ]] \
    || die "this engine is a swarm worker, not a manager: run \`make swarm-init\` on the manager"
node="$(docker info --format '{{.Swarm.NodeID}}')"

if driver="$(docker network inspect "$network" --format '{{.Driver}} {{.Attachable}}' 2>/dev/null)"; then
    [[ "$driver" == "overlay true" ]] \
        || die "a network '$network' exists and is not an attachable overlay ($driver): remove it, or set LLAMADOCK_SWARM_NETWORK"
    log "network $network: there"
else
    docker network create --driver overlay --attachable --label io.llamadock.swarm=network "$network" >/dev/null
    log "network $network: made (attachable overlay)"
fi

have="$(docker node inspect "$node" --format '{{index .Spec.Labels "llamadock.memory_mb"}}')"
if [[ -n "${LLAMADOCK_NODE_MEMORY_MB:-}" || -z "$have" ]]; then
    memory="${LLAMADOCK_NODE_MEMORY_MB:-$(( $(docker info --format '{{.MemTotal}}') / 1048576 * 3 / 4 ))}"
    [[ "$memory" =~ ^[1-9][0-9]*$ ]] || die "LLAMADOCK_NODE_MEMORY_MB must be a whole number of MiB, not '$memory'"
    docker node update --label-add "llamadock.memory_mb=$memory" "$node" >/dev/null
    log "node $(docker node inspect "$node" --format '{{.Description.Hostname}}'): llamadock.memory_mb=$memory"
else
    log "node $(docker node inspect "$node" --format '{{.Description.Hostname}}'): llamadock.memory_mb=$have (kept)"
fi

mkdir -p "$models/.cache"
log "models: $models (every node needs this same path, or an NFS mount of it)"
token="$(docker swarm join-token -q worker 2>/dev/null || echo '<docker swarm join-token -q worker>')"
log "another box joins with (in its llamadock checkout): make swarm-join TOKEN=$token MANAGER=$(docker info --format '{{.Swarm.NodeAddr}}')"
log "  it checks the box first (make swarm-doctor), then prints the label command to run here for its memory budget"
