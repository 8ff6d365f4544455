#!/usr/bin/env bash
# The LiteLLM proxy, one of the alternatives `make bench` compares against, in an
# environment of its own (.bench/litellm) so its many dependencies never meet ours.
# Best effort: the benchmark skips LiteLLM, with a note, when this fails.
set -uo pipefail
cd "$(dirname "$0")/.."
venv=.bench/litellm
[[ -x $venv/bin/litellm ]] && exit 0
python3 -m venv "$venv" && "$venv/bin/pip" install --quiet 'litellm[proxy]>=1.40,<2' \
    || { echo "bench: LiteLLM could not be installed; the benchmark runs without it" >&2; rm -rf "$venv"; exit 0; }
