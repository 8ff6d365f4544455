#!/usr/bin/env bash
# Tools the tests drive besides Python and Docker: tmux, the terminal that
# tests/e2e/test_cli_tmux.py runs the chat client in; chromium, the headless browser
# that renders /docs and /redoc offline (tests/e2e/test_reliability.py) and runs a page on
# another origin against the gateway's CORS (tests/integration/test_browser_cors.py). Idempotent: a no-op when
# everything is there (CI calls it on every run).
#
#   bash scripts/setup-test-tools.sh
set -euo pipefail

log() { echo "setup-test-tools: $*" >&2; }

missing=()
command -v tmux >/dev/null || missing+=(tmux)
command -v chromium >/dev/null || missing+=(chromium)
((${#missing[@]})) || exit 0

log "installing ${missing[*]} (apt)"
as_root=()
((EUID == 0)) || as_root=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq >&2
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
