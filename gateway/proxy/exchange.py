"""One exchange for every API surface: resolve the model → the scheduler's ticket → wait for the
go → the call to the model's llama-server → its failures mapped to errors → the ticket released.

The dialect (gateway/api/) reads the request and writes the answer; everything between is
here, once. ``relay`` does what can fail before a byte is sent (a name nobody knows, a model not
ready) and returns an ``Exchange``: an ASGI response that does the rest itself. Doing it there,
not in the route, lets one watcher cover the whole exchange: a client that goes away while the
model is still thinking (no header sent yet) or while it streams has its upstream connection
dropped, and llama-server stops generating.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Sequence

from fastapi import Request
from starlette.responses import Response

from common.errors import ApiError
from contract.activity import ActivityRecord
from contract.listing import ModelState

from ..activity import TAIL_PIECES, counts_from_tail, split_wait
from ..scheduling import control
from .. import errors
from ..scheduling import progress
from . import relay as pipes, upstream
from .provider_answer import Guarded, screen
from ..context import GatewayContext
from .dialect import Asked, Dialect, UpstreamCall
from ..scheduling.lifecycle import Ticket
from ..routes.table import ModelRoute, retry_after_s, wire_model, with_model

log = logging.getLogger("llamadock.exchange")

# Never forwarded: hop-by-hop headers, and the client's credentials for the gateway.
_DROP_REQUEST_HEADERS = upstream.HOP_BY_HOP | {b"authorization", b"x-api-key"}


def context(request: Request) -> GatewayContext:
    return request.app.state.gateway


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise errors.body_too_large(limit)
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.body_too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def resolve(ctx: GatewayContext, requested: str, use_default: bool = False) -> ModelRoute:
    """The model a name means (RouteTable.find's rules; ``use_default``: LLAMADOCK_DEFAULT_MODEL for
    a name nothing matches); 404 only once the model list is known."""
    table = ctx.registry.route_table()
    default = ctx.settings.default_model if use_default else None
    if not requested and not default:
        raise errors.bad_request("You must provide a model parameter.", param="model")
    found = table.find(requested)
    if found is None:
        provider = table.provider_of(requested)
        if provider is not None and provider.code is not None:
            raise errors.provider_refusal(provider)  # `lmstudio:x` while lmstudio is down: say so
        if not ctx.registry.current:
            # Just started, or the orchestrator is away: the model may well exist. 503 with
            # Retry-After, which OpenAI's and Anthropic's SDKs retry; a 404 they would not.
            raise errors.model_list_pending(ctx.registry.error)
        found = table.find(requested, default=default)
        if found is None:
            raise errors.model_not_found(requested, table.names())
    return found.route


def known_name(ctx: GatewayContext, candidates: Sequence[str]) -> str:
    """The route table's name for the first candidate it knows ("qwen3:latest" finds "qwen3");
    the first candidate as given when it knows none (``resolve`` then says why)."""
    table = ctx.registry.route_table()
    for candidate in candidates:
        route = table.resolve(candidate)
        if route is not None:
            return route.name
    return candidates[0]


async def ready_route(ctx: GatewayContext, requested: str) -> tuple[ModelRoute, Ticket | None]:
    """The model a request names and, for scheduled models, the request's place with the
    scheduler; or the error saying why not."""
    route = resolve(ctx, requested, use_default=True)
    if ctx.lifecycle is not None and ctx.lifecycle.knows(route.name):
        # Declared with the orchestrator: started on demand, queued while busy.
        return route, ctx.lifecycle.request(route.name)
    if route.state is not ModelState.READY:
        # The view may be up to one probe interval old: ask again before refusing.
        route = await ctx.registry.refresh(route.name) or route
        provider = ctx.registry.route_table().providers.get(route.provider) if route.provider else None
        if route.state is not ModelState.READY and provider is not None and provider.code is not None:
            raise errors.provider_refusal(provider)
        if route.state is not ModelState.READY:
            raise errors.model_not_ready(route.name, route.state.value, route.reason, retry_after_s(route.state))
    return route, None


def incoming(request: Request, target: str, body: bytes) -> UpstreamCall:
    """The client's request as it would be forwarded untouched, to ``target`` on the model's server."""
    query = request.url.query
    return UpstreamCall(request.method, target + (f"?{query}" if query else ""), request.headers.raw, body)


async def relay(ctx: GatewayContext, dialect: Dialect, asked: Asked, incoming_call: UpstreamCall, endpoint: str,
                started: float) -> "Exchange":
    """The exchange for a request its dialect has read, as an ASGI response.

    For a scheduled model this takes the scheduler's ticket: the Exchange releases it when it
    ends, and until the Exchange holds it, this does. Everything that could fail on the way
    (the body, its translation) is done before the ticket is taken."""
    name = known_name(ctx, dialect.candidates(asked.model))
    call = dialect.request(asked, name, incoming_call)
    route, ticket = await ready_route(ctx, name)
    # A provider knows its model by its own name; a model standing in as the default is named, so
    # that its answer says which model answered.
    model = wire_model(route, substituted=route.name != name)
    if model is not None:
        call = replace(call, body=with_model(call.body, model))
    try:
        if asked.keep_alive is not None and ticket is not None:
            control.keep_alive(ctx.lifecycle, route.name, asked.keep_alive)  # after Arrive: busy, so not stopped now
        return Exchange(ctx, dialect, ExchangeRequest(route=route, endpoint=endpoint, asked=asked, call=call,
                                                      started=started, ticket=ticket))
    except BaseException:
        if ticket is not None:
            ticket.release()
        raise


async def relay_by_body(request: Request, dialect: Dialect, endpoint: str) -> "Exchange":
    """A route's whole work for a body that names its model: read it, let the dialect read it, relay."""
    started = time.perf_counter()
    ctx = context(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    asked = dialect.read(body, request)
    return await relay(ctx, dialect, asked, incoming(request, request.url.path, body), endpoint, started)


@dataclass(frozen=True)
class ExchangeRequest:
    route: ModelRoute
    endpoint: str  # metric label, e.g. "chat/completions"
    asked: Asked
    call: UpstreamCall  # what goes to the model's server (once admitted, to its URL then)
    started: float  # perf_counter() when the request arrived
    ticket: Ticket | None = None  # the scheduler's word on when to go; None: not a scheduled model


class Exchange(Response):
    """A Response (so FastAPI passes it through) that is really the whole exchange; also the
    ``Client`` that the dialect's answer translation writes to."""

    progress_after_s = 0.5  # a request let through sooner keeps its model's own status and headers

    def __init__(self, ctx: GatewayContext, dialect: Dialect, request: ExchangeRequest) -> None:
        super().__init__()
        self.ctx = ctx
        self.dialect = dialect
        self.request = request
        self.metrics = ctx.metrics
        self.started = request.started
        self.admitted_at = request.started
        self.headers_sent = False
        self.status = 0
        self.server_send = None
        self._send = None
        self._first_at: float | None = None
        self._sse = False
        self._events = 0
        self._last = b""
        self._tail: deque[bytes] = deque(maxlen=TAIL_PIECES)  # the answer's last pieces: its token counts
        self.error_kind: str | None = None
        self.client_gone = False
        self.task: asyncio.Task | None = None
        self.lost: str | None = None  # why its model's server was lost while serving this (its node gone)
        # Served after its conversation's KV cache was restored from disk (gateway/kvcache/): what an
        # activity line says about it. None: not restored (nothing saved matched, or it was not worth it).
        self.kv_restored = None

    @property
    def served_from_restored_cache(self) -> bool:
        """For the activity line: its conversation's KV cache was restored from disk before it was forwarded."""
        return self.kv_restored is not None

    # ---- the exchange ----------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        req = self.request
        model = req.route.name
        in_flight = self.metrics.in_flight.labels(model)
        in_flight.inc()
        self.server_send = scope.get(pipes.SERVER_SEND_KEY)
        self.scope = scope  # an error answer is a Starlette response: it needs the request's scope
        self._send = send
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
        self.task = task
        try:
            await self._exchange()
        except asyncio.CancelledError:
            if self.lost is not None and not client_gone.is_set():
                task.uncancel()
                await self._end_lost()
            elif not client_gone.is_set():
                raise
            else:
                task.uncancel()
                self.status = 499  # nginx's "client closed request"
                self.client_gone = True
                self.metrics.error(model, "client_disconnected")
        finally:
            if not client_gone.is_set():
                watcher.cancel()
            waits = self.request.ticket.wait_span() if self.request.ticket is not None else None
            if req.ticket is not None:
                req.ticket.release()
            in_flight.dec()
            took = time.perf_counter() - req.started
            self.metrics.observe(model, req.endpoint, self.status, took)
            try:
                self.ctx.activity.add(self.record(took, waits))
            except Exception:  # the record is a report: it must never cost the request anything
                log.exception("could not record the activity of a request to %s", model)

    def record(self, took: float, waits: tuple[float, float, float | None] | None) -> ActivityRecord:
        """What this exchange did, as it ends (``waits``: the ticket's span, for a scheduled model)."""
        req = self.request
        queue_s, load_s = split_wait(*waits) if waits is not None else (0.0, 0.0)
        counts = counts_from_tail(b"".join(self._tail))
        ttft = self._first_at - req.started if self._sse and self._first_at is not None else None
        speed = counts.per_second
        if speed is None and counts.tokens_out and ttft is not None and took - ttft > 0:
            speed = counts.tokens_out / (took - ttft)
        return ActivityRecord(
            at=datetime.now(timezone.utc) - timedelta(seconds=took), model=req.route.name, dialect=self.dialect.name,
            endpoint=req.endpoint, stream=req.asked.stream, status=self.status, error=self.error_kind,
            queue_wait_s=queue_s, load_wait_s=load_s, ttft_s=ttft, tokens_in=counts.tokens_in,
            tokens_out=counts.tokens_out, tokens_per_s=speed, duration_s=took, client_disconnected=self.client_gone,
            kv_cache_restored=self.served_from_restored_cache)

    async def _exchange(self) -> None:
        if not await self._admitted():
            return
        self.admitted_at = time.perf_counter()
        req = self.request
        model = req.route.name
        if not req.route.url:
            # Reached by address, a container that is restarting or cut off its network has none:
            # nothing to connect to. The model's view is asked for again, as after a refused connect.
            self._unreachable(model)
            return await self.fail(errors.upstream_unreachable(model, "it has no network address right now"),
                                   "upstream_unreachable")
        call = req.call
        keeper = self.ctx.kv_keeper
        if keeper is not None and req.ticket is not None:
            # Admitted, its model ready: the conversation it continues is restored first, if saved.
            self.kv_restored = await keeper.before_forward(model, req.route.url, req.route.kv_key, req.route.run_id,
                                                           call.target, call.body)
            if self.kv_restored is not None:
                restored = self.kv_restored
                log.info("%s %s: served from a restored KV cache (%d of its prompt's tokens, restored in %.2f s)",
                         model, req.endpoint, restored.shared, restored.seconds)
        route = req.route
        # The client's credentials are for the gateway; a provider's own key (added in relay) goes on.
        forwarded = [(k, v) for k, v in call.headers if k not in _DROP_REQUEST_HEADERS]
        if route.auth_header is not None:
            forwarded.append((b"authorization", route.auth_header))
        settings = self.ctx.settings
        try:
            response = await upstream.send(route.url, call.method, call.target, forwarded, call.body,
                                           connect_timeout=settings.connect_timeout_s,
                                           first_byte_timeout=route.timeout_s or settings.first_byte_timeout_s)
        except upstream.UpstreamConnectError as exc:
            self._unreachable(model)
            if route.provider is not None:
                return await self.fail(errors.provider_unavailable(route.provider, route.url, str(exc)),
                                       "provider_unavailable")
            return await self.fail(errors.upstream_unreachable(model, str(exc)), "upstream_unreachable")
        except upstream.UpstreamTimeout as exc:
            if route.provider is not None:
                return await self.fail(errors.provider_timeout(route.provider, str(exc)), "provider_timeout")
            return await self.fail(errors.upstream_timeout(model, str(exc)), "upstream_timeout")
        except upstream.UpstreamError as exc:
            self._unreachable(model)
            return await self.fail(errors.upstream_broken(model, str(exc)), "upstream_broken")
        if route.provider is not None:
            response = Guarded(response, route.timeout_s or settings.first_byte_timeout_s)
            if not await self._screened(response):
                return

        self._sse = (response.header(b"content-type") or b"").startswith(b"text/event-stream")
        try:
            await self.dialect.answer(req.asked, model, response, self)
        finally:
            response.close()
            if self._sse:
                # llama-server ends OpenAI-style streams with "data: [DONE]", not a token.
                self.metrics.streamed_tokens.labels(model).inc(max(0, self._events - 1))

    async def _screened(self, response: Guarded) -> bool:
        """A provider's answer held to its bounds (provider_answer.screen); False: refused, and said."""
        route = self.request.route
        if self.request.endpoint == "upstream":
            return True  # raw passthrough: its web UI, /props, whatever it serves, as it is
        try:
            problem = await screen(response, route.provider, route.max_answer_bytes or self.ctx.settings.max_body_bytes)
        except upstream.UpstreamTimeout as exc:
            problem = errors.provider_timeout(route.provider, str(exc))
        except upstream.UpstreamError as exc:
            problem = errors.upstream_broken(route.name, str(exc))
        if problem is None:
            return True
        response.close()
        await self.fail(problem, problem.code or "provider_error")
        return False

    async def _admitted(self) -> bool:
        """Wait for the scheduler's go; False: refused, and the refusal answered. A client that
        is told progress hears what it waits for (when that changes, and at the keep-alive
        interval, so it does not time out) in its dialect's stream."""
        req = self.request
        ticket = req.ticket
        if ticket is not None:
            try:
                if self.dialect.tells_progress(req.asked):
                    await self._wait_aloud(ticket)
                else:
                    await ticket.wait()
                ticket.future.result()  # raises the refusal, if it was one
            except ApiError as refused:
                await self.fail(refused, "scheduler_refused")
                return False
            ticket.on_lost = self._on_lost
            # A start gives the model its URL: read the route again.
            route = self.ctx.registry.route_table().get(req.route.name)
            if route is not None and route.url:
                self.request = replace(req, route=route)
        return True

    async def _wait_aloud(self, ticket: Ticket) -> None:
        req = self.request
        keepalive_s = self.ctx.settings.keepalive_s
        began = time.monotonic()
        told_at, told = 0.0, None
        while not ticket.future.done():
            now = time.monotonic()
            report = ticket.progress()
            key = report.key if report is not None else None
            # A loading model is news at once; a queue slot often frees within moments, and a request
            # let through by then keeps its model's own status and headers.
            early = now - began < self.progress_after_s and (report is None or report.kind is progress.Kind.QUEUED)
            if not early and (key != told or now - told_at >= keepalive_s):
                if not self.headers_sent:
                    await self.start(200, [(b"content-type", self.dialect.stream_type),
                                           (b"cache-control", b"no-cache"),
                                           (b"x-llamadock-model", req.route.name.encode())])
                told_at, told = now, key
                await self.send(self.dialect.progress_event(req.asked, report, now - began, req.route.name,
                                                            f"llamadock-{id(self):x}"))
            try:
                # Polled: the scheduler's state changes on its own clock (a start ends, a slot frees).
                await asyncio.wait_for(ticket.wait(), min(0.25, keepalive_s))
            except TimeoutError:
                pass

    def _on_lost(self, why: str) -> None:
        """Its model's node is gone: nothing more will come from there (a cut-off node's connection
        would hang until TCP gives up), so the answer ends now."""
        if self.lost is None and self.task is not None:
            self.lost = why
            self.task.cancel()

    async def _end_lost(self) -> None:
        error = errors.model_lost(self.request.route.name, self.lost or "its node was lost")
        if self.headers_sent and not (self._sse or self.request.asked.stream):
            self.error_kind = "model_node_lost"
            self.metrics.error(self.request.route.name, "model_node_lost")
            return  # nothing valid can end a half-sent JSON body: the connection ends with it
        await self.fail(error, "model_node_lost")

    def _unreachable(self, model: str) -> None:
        """The model refused us or has no address: its view is asked for again, in the background."""
        self.ctx.spawn(self.ctx.registry.refresh(model))

    # ---- the client's side (dialects.Client) ----------------------------------------------------

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers_sent = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def send(self, body: bytes, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": body, "more_body": more})

    async def respond(self, response: Response) -> None:
        self.status = response.status_code
        self.headers_sent = True
        await response(self.scope, None, self._send)

    async def fail(self, error: ApiError, kind: str) -> None:
        self.error_kind = kind
        self.metrics.error(self.request.route.name, kind)
        if self.headers_sent:  # the client has a stream already: end it with the error
            await self.send(self.dialect.stream_error(error), more=False)
            return
        await self.respond(self.dialect.error_response(error))

    def count(self, piece: bytes) -> None:
        """SSE events end with a blank line; JSON strings cannot hold a raw newline."""
        self._tail.append(piece)
        if self._first_at is None:
            self._first_at = time.perf_counter()
            if self._sse:
                self.metrics.ttft.labels(self.request.route.name).observe(self._first_at - self.request.started)
        if self._sse:
            self._events += piece.count(b"\n\n") + (self._last == b"\n" and piece[:1] == b"\n")
            self._last = piece[-1:]

    async def pass_through(self, response: upstream.UpstreamResponse) -> None:
        model = self.request.route.name
        if self.headers_sent:
            # The client already has 200 and stream headers (it waited for the model to start).
            if response.status != 200 or not self._sse:
                body = await response.read()
                error = ApiError(response.status, f"Model '{model}' answered HTTP "
                                 f"{response.status}: {body[:500].decode('utf-8', 'replace')}",
                                 type="server_error", code="upstream_error")
                await self.send(self.dialect.stream_error(error), more=False)
                return
        else:
            headers = [(k.lower(), v) for k, v in response.headers if k.lower() not in pipes.DROP_RESPONSE_HEADERS]
            headers.append((b"x-llamadock-model", model.encode()))
            await self.start(response.status, headers)

        try:
            server = pipes.server_cycle(self.server_send) if self.ctx.settings.fast_relay else None
            if server is not None and server.chunked_encoding is True:
                await pipes.pipe_direct(response, server, self.count)
            else:
                await pipes.pipe_via_asgi(response, self._send, self.count)
        except upstream.UpstreamError as exc:
            stalled = isinstance(exc, upstream.UpstreamTimeout)  # a provider's stream that stopped moving
            self.error_kind = "upstream_timeout" if stalled else "upstream_broken"
            self.metrics.error(model, "upstream_timeout" if stalled else "upstream_broken")
            if not stalled:
                self._unreachable(model)
            if not self._sse:
                raise  # nothing valid can end a half-sent JSON body: the connection is dropped
            error = (errors.provider_timeout(self.request.route.provider or model, str(exc)) if stalled
                     else errors.upstream_broken(model, str(exc)))
            await self.send(self.dialect.stream_error(error), more=False)
            return
        await self.send(b"", more=False)
