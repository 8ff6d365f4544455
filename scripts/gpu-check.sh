#!/usr/bin/env bash
# GPU self-check, without Docker: the memory estimate against NVML, load time,
# and streaming through the gateway vs direct (bench/gpu_check.py prints the table).
#
#   scripts/gpu-check.sh [bench/gpu_check.py options]     # or: make gpu-check
#   LLAMA_SERVER=/path/llama-server [LLAMA_QUANTIZE=...]  # use a CUDA build you have
#   CUDA_ARCHITECTURES=89 ...                             # default: this machine's GPUs
#
# With an NVIDIA GPU and no LLAMA_SERVER it builds a CUDA llama-server and
# llama-quantize once (scripts/build-llama-server.sh, ~5 min on 16 cores; needs
# nvcc and cmake).  Without a GPU it runs the reduced CPU smoke check (--smoke).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
[[ -x "$py" ]] || py=python3

log() { echo "gpu-check: $*" >&2; }
extra=()
if [[ -n "${LLAMA_SERVER:-}" ]]; then
    bin="$LLAMA_SERVER"
    quantize="${LLAMA_QUANTIZE:-$(dirname "$bin")/llama-quantize}"
elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    if ! command -v nvcc >/dev/null; then
        [[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH" || {
            log "an NVIDIA GPU is here but nvcc is not: install the CUDA toolkit, or set LLAMA_SERVER to a CUDA llama-server"
            exit 2; }
    fi
    if [[ -z "${CUDA_ARCHITECTURES:-}" ]]; then   # "9.0" -> "90", one per distinct GPU model
        CUDA_ARCHITECTURES="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | tr -d ' .' | sort -u | paste -sd';')"
    fi
    log "building a CUDA llama-server for architectures $CUDA_ARCHITECTURES (once; cached)"
    bin="$(LLAMA_BUILD_CUDA=1 CUDA_ARCHITECTURES="$CUDA_ARCHITECTURES" bash "$root/scripts/build-llama-server.sh")"
    quantize="$(dirname "$bin")/llama-quantize"
else
    log "no NVIDIA GPU here: running the CPU smoke check (estimate columns only, NVML n/a)"
    bin="$(bash "$root/scripts/build-llama-server.sh")"
    quantize="" extra=(--smoke)
fi
[[ -x "$bin" ]] || { log "$bin is not an executable llama-server"; exit 2; }
args=(--llama-server "$bin")
[[ -n "$quantize" && -x "$quantize" ]] && args+=(--llama-quantize "$quantize")
cd "$root"
exec "$py" bench/gpu_check.py "${args[@]}" "${extra[@]}" "$@"
