"""``python -m agent``: the node agent on port ``LLAMADOCK_AGENT_PORT`` (8089).

In its Swarm service (orchestrator/backends/swarm/agents.py) the host's /proc is mounted at
/host/proc, the models directory at LLAMADOCK_MODELS_DIR, and LLAMADOCK_AGENT_NODE is the node's
hostname (a service template: the container's own hostname is its id)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import uvicorn

from .app import agent_app
from .facts import CachedFacts

DEFAULT_PORT = 8089


def main() -> None:
    proc = Path(os.environ.get("LLAMADOCK_AGENT_PROC", "/host/proc"))
    facts = CachedFacts(hostname=os.environ.get("LLAMADOCK_AGENT_NODE") or socket.gethostname(),
                        models_dir=Path(os.environ.get("LLAMADOCK_MODELS_DIR", "/models")),
                        proc=proc if proc.is_dir() else Path("/proc"))
    uvicorn.run(agent_app(facts), host="0.0.0.0", port=int(os.environ.get("LLAMADOCK_AGENT_PORT", DEFAULT_PORT)),
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
