#!/usr/bin/env bash
# Print the `-f` arguments for docker compose on this host:
#   compose.yaml, plus docker/compose.gpu.yaml when Docker can give containers an
#   NVIDIA GPU, plus docker/compose.wsl2.yaml when the engine runs under WSL2.
# LLAMADOCK_GPU=auto|nvidia|none overrides the GPU detection (also read from .env).
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${LLAMADOCK_GPU:-$(sed -n 's/^LLAMADOCK_GPU=//p' .env 2>/dev/null | tail -n1 || true)}"
mode="${mode:-auto}"
info="$(docker info --format '{{json .Runtimes}} {{json .CDISpecDirs}} {{.KernelVersion}}' 2>/dev/null || true)"

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
echo "$files"
