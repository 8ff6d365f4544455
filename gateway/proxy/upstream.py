"""A minimal HTTP/1.1 client for talking to llama-server on the hot path.

Why not httpx: a streamed completion is one small SSE event per token, and at
1-2k tokens/s per client the proxy's cost *per chunk* decides how much CPU it
takes away from llama-server on the same cores. httpx/httpcore/h11 parse
chunked transfer encoding in Python and cost ~30 µs per chunk; here the
response is parsed by httptools (llhttp, in C, the parser uvicorn uses) inside
an asyncio Protocol, and whatever body has arrived is handed over in one piece.

One connection per request, closed at the end: a loopback connect costs ~0.1 ms
next to a model's time to first token, and there is no stale-pool case to get
wrong when a model container restarts.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import httptools

# Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus the
# ones the client sets for itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)

_MAX_BUFFERED = 1 << 20  # pause reading from the upstream beyond 1 MiB unsent


class UpstreamError(Exception):
    """The model's server could not be reached or broke off its response."""


class UpstreamConnectError(UpstreamError):
    """Refused, unresolvable or not answering the connect in time."""


class UpstreamTimeout(UpstreamError):
    """Connected, but no response headers in time."""


class UpstreamBrokenError(UpstreamError):
    """The response ended before it was complete (server died, connection reset)."""


class _ResponseProtocol(asyncio.Protocol):
    """Feeds bytes to httptools and queues decoded body pieces for the consumer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_ready: asyncio.Future[None] = loop.create_future()
        self.pieces: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._sink: Callable[[bytes], bool] | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBrokenError(f"malformed response from the model's server: {exc}"))
            self.transport.close()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.complete:
            self._fail(UpstreamBrokenError("the model's server closed the connection mid-response"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if not self.headers_ready.done():
            self.headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._sink is not None:
            # Straight through from the read callback: no queue, no task switch.
            if not self._sink(body):
                self._pause()
                self._wake()
            return
        self.pieces.append(body)
        self.buffered += len(body)
        if self.buffered > _MAX_BUFFERED:
            self._pause()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # consumer side
    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        if not self.headers_ready.done():
            self.headers_ready.set_exception(exc)
            self.headers_ready.exception()  # mark retrieved: nobody may be waiting any more
        self._wake()

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_piece(self) -> bytes | None:
        """Everything received since the last call, or None at the end of the body."""
        while not self.pieces:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self._waiter = self._loop.create_future()
            await self._waiter
        data = self._take()
        self._resume()
        return data

    def _take(self) -> bytes:
        """Everything queued, in one piece, and the queue emptied."""
        pieces = self.pieces
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        self.buffered = 0
        return data

    async def pipe_to(self, sink: Callable[[bytes], bool], drain: Callable[[], Awaitable[None]]) -> None:
        """Hand the rest of the body to ``sink`` from the read callback itself.

        ``sink(piece)`` returns False when its side is full; reading then pauses
        until ``drain()`` returns. Returns at the end of the body, raises if it broke.
        """
        if self.pieces and not sink(self._take()):
            await drain()
        self._sink = sink
        self._resume()
        while True:
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            if self._paused:
                await drain()
                self._resume()
                continue
            self._waiter = self._loop.create_future()
            await self._waiter


class UpstreamResponse:
    """Status and headers of a response whose body is still arriving."""

    def __init__(self, protocol: _ResponseProtocol) -> None:
        self._protocol = protocol
        self.status = protocol.status
        self.headers = protocol.headers

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    async def next_piece(self) -> bytes | None:
        return await self._protocol.next_piece()

    async def pipe_to(self, sink: Callable[[bytes], bool], drain: Callable[[], Awaitable[None]]) -> None:
        await self._protocol.pipe_to(sink, drain)

    async def read(self) -> bytes:
        parts = []
        while (piece := await self.next_piece()) is not None:
            parts.append(piece)
        return b"".join(parts)

    def close(self) -> None:
        """Drop the connection at once; llama-server sees it and stops generating."""
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.abort()


_TLS: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()  # the system's CAs (SSL_CERT_FILE honoured)
    return _TLS


def build_request(
    method: str, host: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """Serialise a request, dropping hop-by-hop headers the client sent us."""
    lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\nconnection: close\r\n" % (method.encode(), target, host)]
    for name, value in headers:
        if name not in HOP_BY_HOP:
            lines.append(b"%s: %s\r\n" % (name, value))
    if body or method not in ("GET", "HEAD"):
        lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


async def send(
    base_url: str,
    method: str,
    target: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    *,
    connect_timeout: float = 5.0,
    first_byte_timeout: float = 600.0,
) -> UpstreamResponse:
    """Send one request to ``base_url`` and return once the response headers are in.

    ``target`` is the path and query to request on that server. The caller must
    read the body to its end or call ``close()``.
    """
    url = urlsplit(base_url)
    secure = url.scheme == "https"  # a provider in the cloud; our own models are plain HTTP
    host, port = url.hostname or "127.0.0.1", url.port or (443 if secure else 80)
    prefix = url.path.rstrip("/")
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(connect_timeout):
            transport, protocol = await loop.create_connection(
                lambda: _ResponseProtocol(loop), host, port, ssl=_tls() if secure else None
            )
    except TimeoutError as exc:
        raise UpstreamConnectError(f"no answer from {host}:{port} within {connect_timeout:g} s") from exc
    except OSError as exc:
        raise UpstreamConnectError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc

    host_header = url.netloc.encode()
    transport.write(build_request(method, host_header, (prefix + target).encode(), headers, body))
    response_protocol: _ResponseProtocol = protocol
    try:
        async with asyncio.timeout(first_byte_timeout):
            await response_protocol.headers_ready
    except TimeoutError as exc:
        transport.abort()
        raise UpstreamTimeout(f"{host}:{port} sent no response within {first_byte_timeout:g} s") from exc
    except BaseException:
        transport.abort()
        raise
    return UpstreamResponse(response_protocol)
