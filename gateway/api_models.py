"""Routes that relay to a model's llama-server: /v1/* and /upstream/{model}/*."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from . import errors
from .auth import require_api_key
from .context import GatewayContext
from .relay import Relay, RelayRequest, Timeouts
from .lifecycle import Ticket
from .routing import (Catalog, ModelRoute, ModelState, RequestError, is_streaming_body, model_from_body,
                      retry_after_s)
from .schemas import EXAMPLES, ModelList, ModelObject

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


async def ready_route(ctx: GatewayContext, requested: str) -> tuple[ModelRoute, Ticket | None]:
    """The model a request names and, for scheduled models, the request's place with the
    scheduler; or the OpenAI error saying why not."""
    catalog: Catalog = ctx.registry.catalog()
    route = catalog.resolve(requested)
    if route is None:
        raise errors.model_not_found(requested, catalog.names())
    if ctx.lifecycle is not None and ctx.lifecycle.knows(route.name):
        # Declared with the orchestrator: started on demand, queued while busy.
        return route, ctx.lifecycle.request(route.name)
    if route.state is not ModelState.READY:
        # The view may be up to one probe interval old: ask again before refusing.
        route = await ctx.registry.refresh(route.name) or route
        if route.state is not ModelState.READY:
            raise errors.model_not_ready(route.name, route.state.value, route.reason, retry_after_s(route.state))
    return route, None


def _relay(ctx: GatewayContext, request: Request, route: ModelRoute, endpoint: str, target: str,
           body: bytes, started: float, ticket: Ticket | None = None) -> Relay:
    name = route.name
    return Relay(
        RelayRequest(
            route=route, endpoint=endpoint, method=request.method, target=target,
            headers=request.headers.raw, body=body, started=started,
            anthropic=endpoint.startswith("messages"),
            streaming=ticket is not None and is_streaming_body(body),
            ticket=ticket,
            fresh_route=lambda: next((r for r in ctx.registry.catalog().routes if r.name == name), None),
            keepalive_s=ctx.settings.keepalive_s,
        ),
        ctx.metrics,
        Timeouts(ctx.settings.connect_timeout_s, ctx.settings.first_byte_timeout_s),
        on_unreachable=lambda name: ctx.spawn(ctx.registry.refresh(name)),
        fast=ctx.settings.fast_relay,
    )


async def relay_by_body(request: Request, endpoint: str) -> Relay:
    started = time.perf_counter()
    ctx = _context(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    try:
        requested = model_from_body(body)
    except RequestError as exc:
        raise errors.bad_request(str(exc), exc.param) from None
    route, ticket = await ready_route(ctx, requested)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _relay(ctx, request, route, endpoint, target, body, started, ticket)


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
            503: {"description": "The model is known but not ready (`Retry-After` says when to retry)."},
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


def _model_object(route: ModelRoute) -> ModelObject:
    return ModelObject(id=route.name, created=route.created, aliases=list(route.aliases),
                       state=route.state.value, reason=route.reason)


@router.get("/v1/models", tags=["OpenAI"], response_model=ModelList, summary="Every known model, with aliases and state")
async def list_models(request: Request) -> ModelList:
    catalog = _context(request).registry.catalog()
    return ModelList(data=[_model_object(route) for route in catalog.routes])


@router.get("/v1/models/{model:path}", tags=["OpenAI"], response_model=ModelObject, summary="One model by name or alias")
async def get_model(request: Request, model: str) -> ModelObject:
    catalog = _context(request).registry.catalog()
    route = catalog.resolve(model)
    if route is None:
        raise errors.model_not_found(model, catalog.names())
    return _model_object(route)


async def other_v1(request: Request, path: str):
    if request.method == "POST":
        return await relay_by_body(request, path)
    started = time.perf_counter()
    requested = request.query_params.get("model")
    if not requested:
        raise errors.bad_request("Say which model this is for with '?model=NAME'.", param="model")
    ctx = _context(request)
    route, ticket = await ready_route(ctx, requested)
    return _relay(ctx, request, route, path, request.url.path + f"?{request.url.query}", b"", started, ticket)


for _method in ("GET", "POST"):
    router.add_api_route(
        "/v1/{path:path}", other_v1, methods=[_method], tags=["OpenAI"], name=f"other_v1_{_method.lower()}",
        summary="Any other llama-server /v1 endpoint: POST routes on the body's `model`, GET on `?model=`")


async def upstream_passthrough(request: Request, model: str, path: str):
    started = time.perf_counter()
    ctx = _context(request)
    body = await read_body(request, ctx.settings.max_body_bytes)
    route, ticket = await ready_route(ctx, model)
    target = "/" + path + (f"?{request.url.query}" if request.url.query else "")
    return _relay(ctx, request, route, "upstream", target, body, started, ticket)


for _method in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
    router.add_api_route(
        "/upstream/{model}/{path:path}", upstream_passthrough, methods=[_method], tags=["Passthrough"],
        name=f"upstream_{_method.lower()}",
        summary="Raw passthrough to one model's llama-server (/props, /slots, /metrics, its web UI)")
