"""Does the upstreams file point at the stack itself? A static model or provider on the
gateway's own port would send chats back into the gateway (the orchestrator has no TCP port
anyone can reach: it serves on a Unix socket). `make up` (scripts/up.sh) prints these warnings;
``own_port_warnings`` is the pure check.

    python -m gateway.routes.own_ports config/upstreams.yaml --port gateway=8080
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import urlsplit

# Where the gateway would find itself: this machine, the host seen from a container, and its
# service name on the stack's network.
LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "host.docker.internal"}
SERVICES = {"gateway": 8080}  # inside the stack's network


def _is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host.startswith("127.")


def own_port_warnings(urls: Iterable[tuple[str, str]], ports: Mapping[str, int]) -> list[str]:
    """One warning per ``(what, url)`` that is one of ``ports`` ({service: host port}) on this
    machine, or a stack service at its own port."""
    warnings = []
    for what, url in urls:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            continue  # not a port at all: the file's own check says so
        hit = next((service for service, own in ports.items() if own == port and _is_local(host)), None)
        if hit is None and SERVICES.get(host) == port:
            hit = host
        if hit is not None:
            warnings.append(f"{what} points at {url}, which is the {hit}'s own port: requests sent there would "
                            f"reach llamadock's {hit}, not a model server. Use the port your server listens on "
                            f"(e.g. 8090), or move the {hit} (LLAMADOCK_PORT).")
    return warnings


def main(argv: list[str] | None = None) -> int:
    from .registry import read_upstreams  # here, so the pure check imports nothing of the gateway

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--port", action="append", default=[], metavar="SERVICE=PORT",
                        help="one of the stack's own ports (repeat)")
    args = parser.parse_args(argv)
    try:
        ports = {s: int(p) for s, _, p in (item.partition("=") for item in args.port)}
    except ValueError:
        parser.error("--port takes SERVICE=PORT")
    try:
        upstreams = read_upstreams(args.file)
    except ValueError as exc:
        print(f"llamadock: warning: {exc}", file=sys.stderr)
        return 0
    urls = [(f"model '{r.name}'", r.url or "") for r in upstreams.models]
    urls += [(f"provider '{name}'", entry.url) for name, entry in upstreams.providers.items()]
    for warning in own_port_warnings(urls, ports):
        print(f"llamadock: warning: {args.file}: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
