"""A byte-for-byte TCP forwarder (uvloop): the floor any HTTP relay's CPU cost sits on.

    python bench/tcp_forwarder.py [UPSTREAM_HOST:]UPSTREAM_PORT LISTEN_PORT

No parsing, no HTTP: each read from one side is written to the other. The
benchmark runs it beside the gateway so the table shows what part of the
gateway's cost per token is the kernel's (wake-up, read, write) and what is its own.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


class Side(asyncio.Protocol):
    def __init__(self, peer: "Side | None" = None) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.early = bytearray()  # what the client sent before the upstream connection was up

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.peer.transport is None:
            self.early += data
        else:
            self.peer.transport.write(data)

    def connection_lost(self, exc) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def main(upstream_host: str, upstream_port: int, port: int) -> None:
    loop = asyncio.get_running_loop()

    class Front(Side):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            loop.create_task(self._connect())

        async def _connect(self) -> None:
            _, back = await loop.create_connection(lambda: Side(self), upstream_host, upstream_port)
            self.peer = back
            if self.early:
                back.transport.write(bytes(self.early))

    server = await loop.create_server(Front, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    host, _, upstream = sys.argv[1].rpartition(":")
    uvloop.run(main(host or "127.0.0.1", int(upstream), int(sys.argv[2])))
