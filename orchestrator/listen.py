"""Where the orchestrator's API listens: a Unix socket in a volume only the gateway also mounts
(no TCP port anyone else can knock on), and TCP on its own container's loopback for Docker's
healthcheck (a bash ``/dev/tcp`` probe: a Python check every 2 s would cost more than the idle
service). Run outside the stack (tests, development), TCP on ``orchestrator_host`` alone."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from .settings import OrchestratorSettings

SOCKET_MODE = 0o660  # the gateway runs as the same user and group (compose.yaml)


def unix_listener(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()  # the previous run's: nothing listens on it any more
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, SOCKET_MODE)
    sock.listen(socket.SOMAXCONN)
    return sock


def tcp_listener(host: str, port: int) -> socket.socket:
    return socket.create_server((host, port), backlog=socket.SOMAXCONN)


def listeners(settings: OrchestratorSettings) -> list[socket.socket]:
    found = [tcp_listener(settings.orchestrator_host, settings.orchestrator_port)]
    if settings.orchestrator_socket is not None:
        found.append(unix_listener(settings.orchestrator_socket))
    return found
