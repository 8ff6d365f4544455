"""How the gateway's HTTP clients reach the orchestrator: over its Unix socket when there is one
(the stack's way: a volume both mount, so the API that holds the Docker socket has no TCP port),
else over TCP to ``orchestrator_url`` (the orchestrator run by hand, tests). The URL's host is
then only a name in the request line; every call still carries the admin token."""

from __future__ import annotations

from pathlib import Path

import httpx


def orchestrator_transport(socket: Path | None, limits: httpx.Limits | None = None) -> httpx.AsyncHTTPTransport | None:
    """The transport for a client of the orchestrator; None: httpx's own (TCP). A transport given
    to a client takes the limits itself (the client's own are then ignored)."""
    if socket is None:
        return None
    return httpx.AsyncHTTPTransport(uds=str(socket), **({"limits": limits} if limits is not None else {}))
