#!/usr/bin/env bash
# `make swarm-join TOKEN=<token> MANAGER=<host[:port]>`: join this box to the llamadock swarm.
# The doctor first (a GPU box whose runtime would hand models no GPU stops here, told what to
# change), then scripts/swarm_join.py: the token and the address checked, `docker swarm join`,
# and the node's memory label (LLAMADOCK_NODE_MEMORY_MB; on a worker, the command for the manager).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 scripts/swarm_doctor.py; then
    echo "swarm-join: fix what the doctor says above, then run make swarm-join again (nothing was changed)" >&2
    exit 1
fi
exec python3 scripts/swarm_join.py
