#!/usr/bin/env bash
# Print the `-f` arguments for docker compose on this host:
#   compose.yaml, plus docker/compose.gpu.yaml when Docker can give containers an
#   NVIDIA GPU, plus docker/compose.wsl2.yaml when the engine runs under WSL2, plus
#   docker/compose.hostnet.yaml when the engine runs on Linux (WSL2 included) rather
#   than in Docker Desktop's VM: the gateway then uses the host's network (faster),
#   plus docker/compose.healthcheck.yaml when the engine has healthcheck start_interval,
#   plus docker/compose.swarm.yaml when LLAMADOCK_BACKEND=swarm (the gateway then stays on the
#   bridge: a host-network container cannot join the overlay network the models are on).
# LLAMADOCK_GPU=auto|nvidia|none overrides the GPU detection, LLAMADOCK_NETWORK=
# auto|host|bridge the network one, LLAMADOCK_BACKEND=engine|swarm the backend (all also read
# from .env).
set -euo pipefail
cd "$(dirname "$0")/.."

from_env_file() { sed -n "s/^$1=//p" .env 2>/dev/null | tail -n1 || true; }
mode="${LLAMADOCK_GPU:-$(from_env_file LLAMADOCK_GPU)}"
mode="${mode:-auto}"
network="${LLAMADOCK_NETWORK:-$(from_env_file LLAMADOCK_NETWORK)}"
network="${network:-auto}"
backend="${LLAMADOCK_BACKEND:-$(from_env_file LLAMADOCK_BACKEND)}"
backend="${backend:-engine}"
case "$backend" in
    engine) ;;
    swarm)
        if [[ $network == host ]]; then
            echo "LLAMADOCK_NETWORK=host cannot be used with LLAMADOCK_BACKEND=swarm: a container on the host's network cannot join the overlay the models are on (use auto or bridge)" >&2
            exit 2
        fi
        network=bridge ;;
    *) echo "LLAMADOCK_BACKEND must be engine or swarm (got '$backend')" >&2; exit 2 ;;
esac
info="$(docker info --format '{{json .Runtimes}} {{json .CDISpecDirs}} {{.KernelVersion}} {{.OperatingSystem}}' 2>/dev/null || true)"

gpu=no
case "$mode" in
    nvidia) gpu=yes ;;
    none) gpu=no ;;
    auto)
        if grep -q '"nvidia"' <<<"$info" || ls /etc/cdi/nvidia*.yaml /var/run/cdi/nvidia*.yaml >/dev/null 2>&1; then
            gpu=yes
        fi ;;
    *) echo "LLAMADOCK_GPU must be auto, nvidia or none (got '$mode')" >&2; exit 2 ;;
esac

wsl=no
if [[ -e /dev/dxg ]] || grep -qi 'microsoft\|wsl' <<<"$info"; then wsl=yes; fi

files="-f compose.yaml"
if [[ $gpu == yes ]]; then
    files+=" -f docker/compose.gpu.yaml"
    [[ $wsl == yes ]] && files+=" -f docker/compose.wsl2.yaml"
else
    echo "llamadock: no NVIDIA GPU visible to Docker: running in CPU mode (set LLAMADOCK_GPU=nvidia to force)." >&2
fi

case "$network" in
    host) files+=" -f docker/compose.hostnet.yaml" ;;
    bridge) ;;
    auto)
        # Docker Desktop runs the engine in a VM: "host" there is not this machine's network.
        if [[ $(uname -s) == Linux ]] && ! grep -q 'Docker Desktop' <<<"$info"; then
            files+=" -f docker/compose.hostnet.yaml"
        fi ;;
    *) echo "LLAMADOCK_NETWORK must be auto, host or bridge (got '$network')" >&2; exit 2 ;;
esac

# Healthchecks every 30 s once up (each is an exec, the main cost of an idle stack), every
# second while starting: that needs start_interval, Engine 25 (API 1.44) or newer.
api="$(docker version --format '{{.Server.APIVersion}}' 2>/dev/null || true)"
if [[ -n $api && $(printf '%s\n1.44\n' "$api" | sort -V | head -n1) == 1.44 ]]; then
    files+=" -f docker/compose.healthcheck.yaml"
fi
[[ $backend == swarm ]] && files+=" -f docker/compose.swarm.yaml"
echo "$files"
