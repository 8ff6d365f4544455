"""An answer's bytes from the model's llama-server to the client, untouched.

The body is forwarded piece by piece as it arrives: never parsed, never re-encoded, never held
back. Pieces that arrived together leave together. Under uvicorn, a chunked (streamed) answer is
written straight to its transport from the upstream's read callback (``pipe_direct``); anything
else gets one ASGI send per piece (``pipe_via_asgi``). gateway/proxy/exchange.py decides which, around
the request this belongs to.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from . import upstream

# Where GatewayApp leaves the ASGI server's own `send` (before any middleware wraps it).
SERVER_SEND_KEY = "llamadock.server_send"

# Response headers that describe the model server's hop, not ours.
DROP_RESPONSE_HEADERS = upstream.HOP_BY_HOP - {b"content-length"} | {b"server", b"date"}


def server_cycle(server_send):
    """uvicorn's per-request object behind its `send`, if that is what serves us.

    Checked by shape, not by version: anything else (another server, a test
    client, a changed uvicorn) gets the portable path.
    """
    cycle = getattr(server_send, "__self__", None)
    flow = getattr(cycle, "flow", None)
    if hasattr(cycle, "transport") and hasattr(cycle, "chunked_encoding") \
            and hasattr(flow, "drain") and hasattr(flow, "write_paused"):
        return cycle
    return None


async def pipe_via_asgi(response: upstream.UpstreamResponse, send: Callable[[dict], Awaitable[None]],
                        count: Callable[[bytes], None]) -> None:
    """Portable path: one ASGI send per piece."""
    next_piece = response.next_piece
    while (piece := await next_piece()) is not None:
        count(piece)
        await send({"type": "http.response.body", "body": piece, "more_body": True})


async def pipe_direct(response: upstream.UpstreamResponse, server, count: Callable[[bytes], None]) -> None:
    """Fast path under uvicorn: write each piece as an HTTP chunk from the upstream's read callback.

    Per token this saves a future, a task switch and the ASGI send chain,
    which is most of what the gateway costs. uvicorn stays in charge of the
    response: it wrote the head (chunked) and writes the last chunk; the
    frames in between are exactly what its own send would have written.
    """
    transport = server.transport
    flow = server.flow
    write = transport.writelines

    def sink(piece: bytes) -> bool:
        count(piece)
        if not transport.is_closing():
            write((b"%x\r\n" % len(piece), piece, b"\r\n"))
        return not flow.write_paused

    await response.pipe_to(sink, flow.drain)
