"""Where models run: the ``Runtime`` seam (runtime.py) and its backends, one registration each.

A backend is a module with a factory ``(OrchestratorSettings) -> Runtime``; ``LLAMADOCK_RUNTIME``
names the one to use. Factories are imported only when chosen, so a backend's SDK is loaded
only where it runs.
"""

from __future__ import annotations

import importlib

from ..settings import OrchestratorSettings
from .runtime import Runtime

RUNTIMES = {
    "docker": "orchestrator.backends.docker:docker_runtime",  # the Docker engine on one box
}


def make_runtime(settings: OrchestratorSettings) -> Runtime:
    try:
        where = RUNTIMES[settings.runtime]
    except KeyError:
        raise RuntimeError(f"No runtime backend named {settings.runtime!r} (LLAMADOCK_RUNTIME); "
                           f"known: {', '.join(sorted(RUNTIMES))}.") from None
    module, _, factory = where.partition(":")
    return getattr(importlib.import_module(module), factory)(settings)
