"""``python -m orchestrator``: serve the orchestrator's API with uvicorn, on its socket and its
loopback port (orchestrator/listen.py)."""

from __future__ import annotations

import uvicorn

from common.logs import configure_logging

from .listen import listeners
from .service import build
from .settings import OrchestratorSettings


def main() -> None:
    settings = OrchestratorSettings()
    debug = configure_logging(settings.log_level, settings.log_format)
    config = uvicorn.Config(build(settings), host=settings.orchestrator_host, port=settings.orchestrator_port,
                            log_level=settings.log_level, log_config=None, access_log=debug,
                            server_header=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=listeners(settings))


if __name__ == "__main__":
    main()
