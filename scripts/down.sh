#!/usr/bin/env bash
# `make down`: remove the model containers the orchestrator created (compose does
# not know them), then the stack itself. Nothing of ours is left running.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack-env.sh
# The orchestrator first, so it cannot start a model while we remove them.
bash scripts/compose.sh stop orchestrator >/dev/null 2>&1 || true
models="$(docker ps -aq --filter "label=io.llamadock.project=$COMPOSE_PROJECT_NAME")"
if [[ -n "$models" ]]; then
    echo "llamadock: removing $(wc -w <<<"$models") model container(s)" >&2
    # shellcheck disable=SC2086
    docker stop -t 10 $models >/dev/null
    # shellcheck disable=SC2086
    docker rm -f $models >/dev/null
fi
exec bash scripts/compose.sh down --remove-orphans "$@"
