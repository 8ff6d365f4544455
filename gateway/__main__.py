"""``python -m gateway``: serve the gateway with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import uvicorn

from common.logs import configure_logging

from .app import create_app
from .settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    debug = configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        log_config=None,  # its loggers go through common/logs.py (plain or JSON)
        access_log=debug,  # one activity line per request says more (gateway/activity.py)
        server_header=False,  # the model's own Server header is relayed instead
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
