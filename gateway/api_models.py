"""Routes that relay to a model's llama-server: /v1/* and /upstream/{model}/*."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from contract.listing import ModelState
from contract.status import ModelList, ModelObject

from . import control, errors
from .auth import require_api_key
from .context import GatewayContext
from .ollama import OllamaRequestError, parse_keep_alive
from .progress import wants_reasoning
from .relay import Relay, RelayRequest, Timeouts
from .lifecycle import Ticket
from .routing import Catalog, ModelRoute, RequestError, asks_for_stream, retry_after_s, routed_body
from .schemas import EXAMPLES

router = APIRouter(dependencies=[Depends(require_api_key)])


def _context(request: Request) -> GatewayContext:
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


def resolve(ctx: GatewayContext, requested: str) -> ModelRoute:
    """The model a name or alias means; 404 only once the model list is known."""
    catalog: Catalog = ctx.registry.catalog()
    route = catalog.resolve(requested)
    if route is None:
        if not ctx.registry.current:
            # Just started, or the orchestrator is away: the model may well exist. 503 with
            # Retry-After, which OpenAI's and Anthropic's SDKs retry; a 404 they would not.
            raise errors.model_list_pending(getattr(ctx.registry, "error", None))
        raise errors.model_not_found(requested, catalog.names())
    return route


async def ready_route(ctx: GatewayContext, requested: str) -> tuple[ModelRoute, Ticket | None]:
    """The model a request names and, for scheduled models, the request's place with the
    scheduler; or the OpenAI error saying why not."""
    route = resolve(ctx, requested)
    if ctx.lifecycle is not None and ctx.lifecycle.knows(route.name):
        # Declared with the orchestrator: started on demand, queued while busy.
        return route, ctx.lifecycle.request(route.name)
    if route.state is not ModelState.READY:
        # The view may be up to one probe interval old: ask again before refusing.
        route = await ctx.registry.refresh(route.name) or route
        if route.state is not ModelState.READY:
            raise errors.model_not_ready(route.name, route.state.value, route.reason, retry_after_s(route.state))
    return route, None


async def relay_to(ctx: GatewayContext, request: Request, requested: str, endpoint: str, target: str, body: bytes,
                   started: float, streaming: bool, keep_alive: float | None = None) -> Relay:
    """The exchange with the model ``requested`` names, as a Relay (an ASGI response).

    For a scheduled model this takes the scheduler's ticket: the Relay releases it when
    the exchange ends, and until the Relay holds it, this does. Everything that could
    fail on the way (the body) was read before the ticket is taken."""
    route, ticket = await ready_route(ctx, requested)
    try:
        if keep_alive is not None and ticket is not None:
            control.keep_alive(ctx.lifecycle, route.name, keep_alive)  # after Arrive: busy, so not stopped now
        return _relay(ctx, request, route, endpoint, target, body, started, ticket, streaming)
    except BaseException:
        if ticket is not None:
            ticket.release()
        raise


def _relay(ctx: GatewayContext, request: Request, route: ModelRoute, endpoint: str, target: str,
           body: bytes, started: float, ticket: Ticket | None, streaming: bool) -> Relay:
    name = route.name
    return Relay(
        RelayRequest(
            route=route, endpoint=endpoint, method=request.method, target=target,
            headers=request.headers.raw, body=body, started=started,
            anthropic=endpoint.startswith("messages"),
            streaming=ticket is not None and streaming,
            ticket=ticket,
            fresh_route=lambda: next((r for r in ctx.registry.catalog().routes if r.name == name), None),
            keepalive_s=ctx.settings.keepalive_s,
            progress_as_reasoning=endpoint == "chat/completions" and wants_reasoning(
                dict(request.headers), dict(request.query_params)),
        ),
        ctx.metrics,
        Timeouts(ctx.settings.connect_timeout_s, ctx.settings.first_byte_timeout_s),
        on_unreachable=lambda name: ctx.spawn(ctx.registry.refresh(name)),
        fast=ctx.settings.fast_relay,
    )


def _target(request: Request, path: str) -> str:
    return path + (f"?{request.url.query}" if request.url.query else "")


async def relay_by_body(request: Request, endpoint: str) -> Relay:
    started = time.perf_counter()
    ctx = _context(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    try:
        fields = routed_body(body)  # the one parse of the body: model and stream
    except RequestError as exc:
        raise errors.bad_request(str(exc), exc.param) from None
    try:
        keep_alive = parse_keep_alive(fields.keep_alive)
    except OllamaRequestError as exc:
        raise errors.bad_request(str(exc), "keep_alive") from None
    return await relay_to(ctx, request, fields.model, endpoint, _target(request, request.url.path), body, started,
                          fields.stream, keep_alive)


def _body_doc(example_key: str, summary: str) -> dict:
    return {
        "summary": summary,
        "response_class": JSONResponse,
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object", "required": ["model"]},
                                                 "examples": EXAMPLES[example_key]}},
            }
        },
        "responses": {
            200: {"description": "The model's answer, as llama-server sent it (JSON, or SSE when `stream` is true)."},
            400: {"description": "Invalid JSON or no `model`."},
            401: {"description": "API keys are on and none or a wrong one was sent."},
            404: {"description": "No such model; the message lists the available ones."},
            413: {"description": "Body larger than LLAMADOCK_MAX_BODY_BYTES."},
            502: {"description": "The model's server refused the connection or broke off."},
            503: {"description": "The model is known but not ready, or the gateway has just started and does not "
                                 "know the model list yet (`Retry-After` says when to retry)."},
            504: {"description": "The model's server did not answer in time."},
        },
    }


@router.post("/v1/chat/completions", tags=["OpenAI"], **_body_doc("chat", "Chat completion (stream or not)"))
async def chat_completions(request: Request):
    return await relay_by_body(request, "chat/completions")


@router.post("/v1/completions", tags=["OpenAI"], **_body_doc("completion", "Text completion"))
async def completions(request: Request):
    return await relay_by_body(request, "completions")


@router.post("/v1/embeddings", tags=["OpenAI"], **_body_doc("embeddings", "Embeddings (the model's server needs --embeddings)"))
async def embeddings(request: Request):
    return await relay_by_body(request, "embeddings")


@router.post("/v1/responses", tags=["OpenAI"], **_body_doc("responses", "OpenAI Responses API, where llama-server serves it"))
async def responses(request: Request):
    return await relay_by_body(request, "responses")


@router.post("/v1/messages", tags=["Anthropic"], **_body_doc("messages", "Anthropic Messages API (served by llama-server)"))
async def messages(request: Request):
    return await relay_by_body(request, "messages")


@router.post("/v1/messages/count_tokens", tags=["Anthropic"], **_body_doc("messages", "Anthropic token count"))
async def messages_count_tokens(request: Request):
    return await relay_by_body(request, "messages/count_tokens")


def model_object(route: ModelRoute) -> ModelObject:
    return ModelObject(id=route.name, created=route.created, aliases=list(route.aliases),
                       state=route.state, reason=route.reason)


_PENDING = {503: {"description": "The gateway has just started and does not know the model list yet (`Retry-After`)."}}


@router.get("/v1/models", tags=["OpenAI"], response_model=ModelList, summary="Every known model, with aliases and state",
            responses=_PENDING)
async def list_models(request: Request) -> ModelList:
    registry = _context(request).registry
    if not registry.synced:
        raise errors.model_list_pending(getattr(registry, "error", None))  # an empty list would be a lie
    catalog = registry.catalog()
    return ModelList(data=[model_object(route) for route in catalog.routes])


@router.get("/v1/models/{model:path}", tags=["OpenAI"], response_model=ModelObject, summary="One model by name or alias",
            responses={404: {"description": "No such model."}, **_PENDING})
async def get_model(request: Request, model: str) -> ModelObject:
    return model_object(resolve(_context(request), model))


async def other_v1(request: Request, path: str):
    if request.method == "POST":
        return await relay_by_body(request, path)
    started = time.perf_counter()
    requested = request.query_params.get("model")
    if not requested:
        raise errors.bad_request("Say which model this is for with '?model=NAME'.", param="model")
    return await relay_to(_context(request), request, requested, path, _target(request, request.url.path), b"",
                          started, streaming=False)


for _method in ("GET", "POST"):
    router.add_api_route(
        "/v1/{path:path}", other_v1, methods=[_method], tags=["OpenAI"], name=f"other_v1_{_method.lower()}",
        summary="Any other llama-server /v1 endpoint: POST routes on the body's `model`, GET on `?model=`")


async def upstream_passthrough(request: Request, model: str, path: str):
    started = time.perf_counter()
    ctx = _context(request)
    # Raw: the body goes to the model's server as it came, JSON object or not.
    body = await read_body(request, ctx.settings.max_body_bytes)
    return await relay_to(ctx, request, model, "upstream", _target(request, "/" + path), body, started,
                          asks_for_stream(body))


for _method in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
    router.add_api_route(
        "/upstream/{model}/{path:path}", upstream_passthrough, methods=[_method], tags=["Passthrough"],
        name=f"upstream_{_method.lower()}",
        summary="Raw passthrough to one model's llama-server (/props, /slots, /metrics, its web UI)")
