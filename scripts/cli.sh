#!/usr/bin/env bash
# The CLI in its container, sized as the caller's terminal; plain and full width into a pipe.
#
#   bash scripts/cli.sh ps
#
# `docker compose run` passes no terminal size in, and without one rich assumes 80 columns and
# cuts tables: on a terminal the container gets a terminal and the caller's COLUMNS / LINES; into
# a pipe (CI, `| cat`, `watch`) no terminal (-T), and the CLI prints every column (cli/console.py).
set -euo pipefail
cd "$(dirname "$0")/.."
terminal=(-T)
if [ -t 1 ]; then
  exec 3>&1  # the terminal, still reachable inside $( ) below, where stdout is a pipe
  if size="$(stty size <&3 2>/dev/null)" && [ -n "$size" ]; then
    terminal=(-e "LINES=${size% *}" -e "COLUMNS=${size#* }")
  else
    terminal=()
  fi
  exec 3>&-
fi
exec bash scripts/compose.sh --profile cli run --rm "${terminal[@]}" cli python -m cli "$@"
