#!/usr/bin/env bash
# `docker compose` for this stack: the right -f files for this host (GPU, WSL2)
# and the host-specific environment.  Every Makefile target goes through it.
#
#   bash scripts/compose.sh ps
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/stack-env.sh
files="$(bash scripts/compose-files.sh)"
# shellcheck disable=SC2086  # $files is a list of -f arguments
exec docker compose $files "$@"
