"""Where models run: the ``Runtime`` seam (runtime.py) and its backends, one registration each.

A backend is a module with a factory ``(OrchestratorSettings) -> Runtime``; ``LLAMADOCK_BACKEND``
names the one to use (``LLAMADOCK_RUNTIME``, its first name, still reads). Factories are imported
only when chosen, so a backend's SDK is loaded only where it runs.
"""

from __future__ import annotations

import importlib

from ..settings import OrchestratorSettings
from .runtime import Runtime

RUNTIMES = {
    "engine": "orchestrator.backends.docker:docker_runtime",  # the Docker engine on one box (the default)
    "docker": "orchestrator.backends.docker:docker_runtime",  # the engine's first name, kept
    "swarm": "orchestrator.backends.swarm:swarm_runtime",  # services of a Docker Swarm, on its nodes
}


def make_runtime(settings: OrchestratorSettings) -> Runtime:
    try:
        where = RUNTIMES[settings.runtime]
    except KeyError:
        raise RuntimeError(f"No runtime backend named {settings.runtime!r} (LLAMADOCK_BACKEND); "
                           f"known: {', '.join(sorted(RUNTIMES))}.") from None
    module, _, factory = where.partition(":")
    return getattr(importlib.import_module(module), factory)(settings)
