"""``python -m gateway``: serve the gateway with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import logging

import uvicorn

from .app import create_app
from .settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        server_header=False,  # the model's own Server header is relayed instead
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
