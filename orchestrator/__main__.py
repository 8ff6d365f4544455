"""``python -m orchestrator``: serve the orchestrator's API with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from .service import build
from .settings import OrchestratorSettings


def main() -> None:
    settings = OrchestratorSettings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(build(settings), host=settings.orchestrator_host, port=settings.orchestrator_port,
                log_level=settings.log_level, server_header=False, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
