"""Relaying one request to a model's llama-server and its answer back, untouched.

``Relay`` is an ASGI response: the route validates and picks the model, then
returns a Relay, which does the upstream exchange itself. Doing it there, not in
the route, lets one watcher cover the whole exchange: a client that goes away
while the model is still thinking (no header sent yet) or while it streams has
its upstream connection dropped, and llama-server stops generating.

The body is forwarded piece by piece as it arrives: never parsed, never
re-encoded, never held back. Pieces that arrived together leave together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Callable

from starlette.responses import Response

from common.errors import ApiError

from . import errors, progress, upstream
from .metrics import GatewayMetrics
from .routing import ModelRoute

log = logging.getLogger("llamadock.relay")

_DROP_REQUEST_HEADERS = upstream.HOP_BY_HOP | {b"authorization", b"x-api-key"}
_DROP_RESPONSE_HEADERS = upstream.HOP_BY_HOP - {b"content-length"} | {b"server", b"date"}


# Where GatewayApp leaves the ASGI server's own `send` (before any middleware wraps it).
SERVER_SEND_KEY = "llamadock.server_send"


def _server_cycle(server_send):
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


@dataclass(frozen=True)
class RelayRequest:
    route: ModelRoute
    endpoint: str  # metric label, e.g. "chat/completions"
    method: str
    target: str  # path + query on the model's server
    headers: list[tuple[bytes, bytes]]
    body: bytes
    started: float  # perf_counter() when the request arrived
    anthropic: bool = False  # report stream errors the Anthropic way (/v1/messages)
    streaming: bool = False  # the client asked for a stream
    ticket: object | None = None  # lifecycle.Ticket: the scheduler's word on when to go
    fresh_route: Callable[[], ModelRoute | None] | None = None  # the route once admitted (a start gives a URL)
    keepalive_s: float = 2.0
    progress_as_reasoning: bool = False  # also send the wait's progress as reasoning_content deltas (chat streams)
    progress_after_s: float = 0.5  # a request let through sooner keeps its model's own status and headers


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    first_byte_s: float


class Relay(Response):
    """A Response (so FastAPI passes it through) that is really the whole exchange."""

    def __init__(self, request: RelayRequest, metrics: GatewayMetrics, timeouts: Timeouts, on_unreachable=None,
                 fast: bool = True) -> None:
        super().__init__()
        self.request = request
        self.fast = fast
        self.server_send = None
        self._first_at: float | None = None
        self._sse = False
        self._events = 0
        self._last = b""
        self.metrics = metrics
        self.timeouts = timeouts
        self.on_unreachable = on_unreachable  # callback(name): re-check a model that refused us
        self.status = 0
        self._headers_sent = False

    async def __call__(self, scope, receive, send) -> None:
        req = self.request
        model = req.route.name
        in_flight = self.metrics.in_flight.labels(model)
        in_flight.inc()
        self.server_send = scope.get(SERVER_SEND_KEY)
        self.scope = scope  # an error answer is a Starlette response: it needs the request's scope
        task = asyncio.current_task()
        client_gone = asyncio.Event()

        async def watch_client() -> None:
            # The body was read already: the next message is the disconnect (or the
            # end of our own response, after which there is nothing left to stop).
            while (await receive())["type"] != "http.disconnect":
                pass
            client_gone.set()
            task.cancel()

        watcher = asyncio.create_task(watch_client())
        try:
            await self._exchange(send)
        except asyncio.CancelledError:
            if not client_gone.is_set():
                raise
            task.uncancel()
            self.status = 499  # nginx's "client closed request"
            self.metrics.error(model, "client_disconnected")
        finally:
            if not client_gone.is_set():
                watcher.cancel()
            if req.ticket is not None:
                req.ticket.release()
            in_flight.dec()
            self.metrics.observe(model, req.endpoint, self.status, time.perf_counter() - req.started)

    async def _admission(self, send) -> bool | None:
        """Wait for the scheduler's go. True: SSE headers were sent while waiting (a
        streaming client is told what it waits for, as SSE comments, when that changes
        and at the keep-alive interval, so it does not time out); None: the request was
        refused and answered."""
        req = self.request
        ticket = req.ticket
        if ticket is None:
            return False
        began, headers_sent = time.monotonic(), False
        told_at, told = 0.0, None
        try:
            if not req.streaming:
                await ticket.wait()
            while not ticket.future.done():
                now = time.monotonic()
                report = ticket.progress() if hasattr(ticket, "progress") else None
                key = report.key if report is not None else None
                # A loading model is news at once; a queue slot often frees within moments, and a request
                # let through by then keeps its model's own status and headers.
                early = now - began < req.progress_after_s and (report is None or report.kind is progress.Kind.QUEUED)
                if not early and (key != told or now - told_at >= req.keepalive_s):
                    if not headers_sent:
                        self.status = 200
                        await send({"type": "http.response.start", "status": 200, "headers": [
                            (b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                            (b"x-llamadock-model", req.route.name.encode())]})
                        headers_sent = True
                    told_at, told = now, key
                    await send({"type": "http.response.body", "body": self._progress_note(report, now - began),
                                "more_body": True})
                try:
                    # Polled: the scheduler's state changes on its own clock (a start ends, a slot frees).
                    await asyncio.wait_for(ticket.wait(), min(0.25, req.keepalive_s))
                except TimeoutError:
                    pass
            ticket.future.result()  # raises the refusal, if it was one
        except ApiError as refused:
            self.metrics.error(req.route.name, "scheduler_refused")
            if not headers_sent:
                self.status = refused.status
                await refused.response()(self.scope, None, send)
            else:
                await send({"type": "http.response.body", "body": refused.sse_event(req.anthropic),
                            "more_body": False})
            return None
        if req.fresh_route is not None:
            route = req.fresh_route()
            if route is not None and route.url:
                self.request = replace(req, route=route)
        return headers_sent

    def _progress_note(self, report: progress.Progress | None, waited: float) -> bytes:
        req = self.request
        if report is None:  # admitted or refused this very moment: the loop ends next
            return progress.sse_comment(f"waiting for model {req.route.name} {waited:.1f} s")
        note = progress.sse_comment(report.text)
        if req.progress_as_reasoning:
            note += progress.reasoning_chunk(progress.reasoning_text(report), req.route.name,
                                             f"chatcmpl-llamadock-{id(self):x}", int(time.time()))
        return note

    async def _exchange(self, send) -> None:
        headers_sent = await self._admission(send)
        if headers_sent is None:
            return
        self._headers_sent = headers_sent
        req = self.request
        model = req.route.name
        forwarded = [(k, v) for k, v in req.headers if k not in _DROP_REQUEST_HEADERS]
        if not req.route.url:
            # Reached by address, a container that is restarting or cut off its network has none:
            # nothing to connect to. The model's view is asked for again, as after a refused connect.
            if self.on_unreachable:
                self.on_unreachable(model)
            return await self._fail(send, errors.upstream_unreachable(model, "it has no network address right now"),
                                    "upstream_unreachable")
        try:
            response = await upstream.send(
                req.route.url, req.method, req.target, forwarded, req.body,
                connect_timeout=self.timeouts.connect_s, first_byte_timeout=self.timeouts.first_byte_s,
            )
        except upstream.UpstreamConnectError as exc:
            if self.on_unreachable:
                self.on_unreachable(model)
            return await self._fail(send, errors.upstream_unreachable(model, str(exc)), "upstream_unreachable")
        except upstream.UpstreamTimeout as exc:
            return await self._fail(send, errors.upstream_timeout(model, str(exc)), "upstream_timeout")
        except upstream.UpstreamError as exc:
            if self.on_unreachable:
                self.on_unreachable(model)
            return await self._fail(send, errors.upstream_broken(model, str(exc)), "upstream_broken")

        try:
            await self._stream(response, send)
        finally:
            response.close()

    async def _stream(self, response: upstream.UpstreamResponse, send) -> None:
        req = self.request
        self.status = response.status
        headers = [(k.lower(), v) for k, v in response.headers if k.lower() not in _DROP_RESPONSE_HEADERS]
        headers.append((b"x-llamadock-model", req.route.name.encode()))
        content_type = response.header(b"content-type") or b""
        self._sse = sse = content_type.startswith(b"text/event-stream")
        if self._headers_sent:
            # The client already has 200 and SSE headers (it waited for the model to start).
            if response.status != 200 or not sse:
                body = await response.read()
                error = ApiError(response.status, f"Model '{req.route.name}' answered HTTP "
                                 f"{response.status}: {body[:500].decode('utf-8', 'replace')}",
                                 type="server_error", code="upstream_error")
                await send({"type": "http.response.body", "body": error.sse_event(req.anthropic),
                            "more_body": False})
                return
        else:
            await send({"type": "http.response.start", "status": response.status, "headers": headers})

        try:
            server = _server_cycle(self.server_send) if self.fast else None
            if server is not None and server.chunked_encoding is True:
                await self._pipe_direct(response, server)
            else:
                await self._pipe_via_asgi(response, send)
        except upstream.UpstreamBrokenError as exc:
            self.metrics.error(req.route.name, "upstream_broken")
            if self.on_unreachable:
                self.on_unreachable(req.route.name)
            if not sse:
                raise  # nothing valid can end a half-sent JSON body: the connection is dropped
            error = errors.upstream_broken(req.route.name, str(exc))
            await send({"type": "http.response.body", "body": error.sse_event(req.anthropic), "more_body": False})
            return
        finally:
            if sse:
                # llama-server ends OpenAI-style streams with "data: [DONE]", not a token.
                self.metrics.streamed_tokens.labels(req.route.name).inc(max(0, self._events - 1))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _count(self, piece: bytes) -> None:
        """SSE events end with a blank line; JSON strings cannot hold a raw newline."""
        if self._first_at is None:
            self._first_at = time.perf_counter()
            if self._sse:
                self.metrics.ttft.labels(self.request.route.name).observe(self._first_at - self.request.started)
        if self._sse:
            self._events += piece.count(b"\n\n") + (self._last == b"\n" and piece[:1] == b"\n")
            self._last = piece[-1:]

    async def _pipe_via_asgi(self, response: upstream.UpstreamResponse, send) -> None:
        """Portable path: one ASGI send per piece."""
        next_piece = response.next_piece
        while (piece := await next_piece()) is not None:
            self._count(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})

    async def _pipe_direct(self, response: upstream.UpstreamResponse, server) -> None:
        """Fast path under uvicorn: write each piece as an HTTP chunk from the upstream's read callback.

        Per token this saves a future, a task switch and the ASGI send chain,
        which is most of what the gateway costs. uvicorn stays in charge of the
        response: it wrote the head (chunked) and writes the last chunk; the
        frames in between are exactly what its own send would have written.
        """
        transport = server.transport
        flow = server.flow
        write = transport.writelines
        count = self._count

        def sink(piece: bytes) -> bool:
            count(piece)
            if not transport.is_closing():
                write((b"%x\r\n" % len(piece), piece, b"\r\n"))
            return not flow.write_paused

        await response.pipe_to(sink, flow.drain)

    async def _fail(self, send, error: ApiError, kind: str) -> None:
        self.metrics.error(self.request.route.name, kind)
        if self._headers_sent:  # the client waited on an SSE stream already: end it with the error
            await send({"type": "http.response.body", "body": error.sse_event(self.request.anthropic),
                        "more_body": False})
            return
        self.status = error.status
        await error.response()(self.scope, None, send)
