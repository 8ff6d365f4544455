"""Ollama's API (/api/*) on the gateway: the same models, routing, scheduling and llama-server
upstreams as /v1, for apps that speak Ollama. The translation is gateway/ollama.py's; this
module does the exchange: the scheduler's ticket (released on every path), keep_alive, the
upstream request, and the answer back as one JSON or NDJSON lines. Errors: {"error": "..."}."""

from __future__ import annotations

import hashlib
import json
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from common.errors import ApiError
from contract.listing import ModelState, ModelStatus

from . import control, errors, ollama, upstream
from .api_models import read_body, ready_route, resolve
from .auth import require_api_key
from .context import GatewayContext
from .lifecycle import Ticket
from .routing import ModelRoute
from .scheduler import Phase

router = APIRouter(prefix="/api", tags=["Ollama"], dependencies=[Depends(require_api_key)])

VERSION = "0.12.0"  # the Ollama API version whose shapes these follow
FOREVER = "2318-06-12T00:00:00Z"  # Ollama's expires_at for a model kept loaded for good
NDJSON = "application/x-ndjson"


def is_ollama(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_response(error: ApiError) -> JSONResponse:
    """Ollama's error shape: {"error": "message"}, with the same status and headers."""
    return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)


def _ctx(request: Request) -> GatewayContext:
    return request.app.state.gateway


def _doc(summary: str) -> dict:
    return {"summary": summary, "openapi_extra": {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["model"]}}}}}}


async def _body(request: Request) -> dict:
    raw = await read_body(request, _ctx(request).settings.max_body_bytes)
    try:
        body = json.loads(raw) if raw else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.bad_request(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object.")
    return body


def _checked(call, *args):
    """A translation, its OllamaRequestError as a 400."""
    try:
        return call(*args)
    except ollama.OllamaRequestError as exc:
        raise errors.bad_request(str(exc)) from None


def _name(ctx: GatewayContext, requested: str) -> str:
    """The catalog's name for ``requested`` ("qwen3:latest" finds "qwen3"); as given when unknown."""
    catalog = ctx.registry.catalog()
    for candidate in ollama.candidates(requested):
        route = catalog.resolve(candidate)
        if route is not None:
            return route.name
    return requested


def _listed(ctx: GatewayContext, name: str) -> ModelStatus | None:
    """The orchestrator's status of a model; None for a static upstream."""
    return ctx.lifecycle.listing.find(name) if ctx.lifecycle is not None else None


def _scheduled(ctx: GatewayContext, name: str) -> bool:
    return ctx.lifecycle is not None and ctx.lifecycle.knows(name)


# ---- chat, generate, embed -----------------------------------------------------------------------

async def _send(ctx: GatewayContext, route: ModelRoute, endpoint: str, body: dict) -> upstream.UpstreamResponse:
    """The request to the model's server; its refusal or failure as an ApiError."""
    if not route.url:
        raise errors.model_not_ready(route.name, route.state.value, route.reason, 5)
    try:
        response = await upstream.send(route.url, "POST", f"/v1/{endpoint}", [(b"content-type", b"application/json")],
                                       json.dumps(body).encode(), connect_timeout=ctx.settings.connect_timeout_s,
                                       first_byte_timeout=ctx.settings.first_byte_timeout_s)
    except upstream.UpstreamConnectError as exc:
        ctx.spawn(ctx.registry.refresh(route.name))
        raise errors.upstream_unreachable(route.name, str(exc)) from None
    except upstream.UpstreamTimeout as exc:
        raise errors.upstream_timeout(route.name, str(exc)) from None
    except upstream.UpstreamError as exc:
        raise errors.upstream_broken(route.name, str(exc)) from None
    if response.status != 200:
        try:
            text = await response.read()
        except upstream.UpstreamError:
            text = b""
        finally:
            response.close()
        status = response.status if 400 <= response.status < 600 else 502
        raise ApiError(status, f"Model '{route.name}': {ollama.upstream_error(response.status, text)}")
    return response


async def _admitted(ctx: GatewayContext, route: ModelRoute, ticket: Ticket | None) -> ModelRoute:
    """Wait for the scheduler's go; the route as it is then (a start gives it its URL)."""
    if ticket is None:
        return route
    await ticket.wait()
    return next((r for r in ctx.registry.catalog().routes if r.name == route.name), route)


class _Stream(StreamingResponse):
    """NDJSON lines; ``cleanup`` runs however the response ends, even if the body never started."""

    def __init__(self, lines, cleanup) -> None:
        super().__init__(lines, media_type=NDJSON)
        self.cleanup = cleanup

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.cleanup()


def _line(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


async def _exchange(request: Request, kind: str):
    started = time.perf_counter()
    ctx = _ctx(request)
    body = await _body(request)
    name = _name(ctx, _checked(ollama.model_of, body))
    keep = _checked(ollama.parse_keep_alive, body.get("keep_alive"))
    if kind in ("chat", "generate") and ollama.is_load_only(kind, body):
        return await _load_only(ctx, kind, name, keep)
    if kind == "chat":
        endpoint, wanted = "chat/completions", _checked(ollama.chat_request, body, name)
    elif kind == "generate":
        endpoint, wanted = _checked(ollama.generate_request, body, name)
    else:
        endpoint, wanted = "embeddings", _checked(ollama.embed_request, body, name, kind == "embeddings")
    streaming = kind in ("chat", "generate") and ollama.stream_of(body)

    route, ticket = await ready_route(ctx, name)
    release = ticket.release if ticket is not None else (lambda: None)
    try:
        if keep is not None and ticket is not None:
            control.keep_alive(ctx.lifecycle, route.name, keep)  # after the ticket: it is busy, not stopped now
        route = await _admitted(ctx, route, ticket)
        load_ns = int((time.perf_counter() - started) * 1e9)
        response = await _send(ctx, route, endpoint, wanted)
    except BaseException:
        release()
        raise

    if not streaming:
        try:
            raw = await response.read()
        except upstream.UpstreamError as exc:
            raise errors.upstream_broken(route.name, str(exc)) from None
        finally:
            response.close()
            release()
        try:
            answer = json.loads(raw)
        except ValueError:
            raise errors.upstream_broken(route.name, "its answer is not JSON") from None
        if kind in ("embed", "embeddings"):
            return JSONResponse(ollama.embed_answer(name, answer, started, load_ns, legacy=kind == "embeddings"))
        result = ollama.Answer(kind, name, started=started, load_ns=load_ns)
        result.take(answer)
        return JSONResponse(result.last(whole=True))

    result = ollama.Answer(kind, name, started=started, load_ns=load_ns)

    async def lines():
        decoder = ollama.SseDecoder()
        try:
            while (piece := await response.next_piece()) is not None:
                for event in decoder.feed(piece):
                    if "error" in event and not event.get("choices"):
                        error = event["error"]
                        yield _line({"error": error.get("message") if isinstance(error, dict) else str(error)})
                        return
                    for line in result.take(event):
                        yield _line(line)
            yield _line(result.last())
        except upstream.UpstreamError as exc:
            yield _line({"error": f"Model '{route.name}' broke off its answer: {exc}."})

    def cleanup() -> None:
        response.close()
        release()

    return _Stream(lines(), cleanup)


async def _load_only(ctx: GatewayContext, kind: str, name: str, keep: float | None) -> JSONResponse:
    """An empty generate / chat: load the model (and apply keep_alive), or unload it (keep_alive 0)."""
    route = resolve(ctx, name)
    if keep == 0:
        if _scheduled(ctx, route.name):
            control.keep_alive(ctx.lifecycle, route.name, 0)  # stops it now if idle, else after its requests
        reason = "unload"
    else:
        if _scheduled(ctx, route.name):
            await control.load(ctx.lifecycle, route.name)
            if keep is not None:
                control.keep_alive(ctx.lifecycle, route.name, keep)
        elif route.state is not ModelState.READY:
            raise errors.model_not_ready(route.name, route.state.value, route.reason, 5)
        reason = "load"
    line: dict = {"model": name, "created_at": ollama.now_iso()}
    if kind == "chat":
        line["message"] = {"role": "assistant", "content": ""}
    else:
        line["response"] = ""
    return JSONResponse({**line, "done": True, "done_reason": reason})


@router.post("/chat", **_doc("Chat (Ollama): streamed NDJSON unless `stream` is false"))
async def chat(request: Request):
    return await _exchange(request, "chat")


@router.post("/generate", **_doc("Generate (Ollama); an empty prompt only loads, or with keep_alive 0 unloads"))
async def generate(request: Request):
    return await _exchange(request, "generate")


@router.post("/embed", **_doc("Embeddings (Ollama); the model's server needs --embeddings"))
async def embed(request: Request):
    return await _exchange(request, "embed")


@router.post("/embeddings", **_doc("Embeddings, Ollama's older endpoint (`prompt`, one vector)"))
async def embeddings(request: Request):
    return await _exchange(request, "embeddings")


# ---- models ----------------------------------------------------------------------------------------

def _entry(ctx: GatewayContext, route: ModelRoute) -> dict:
    listed = _listed(ctx, route.name)
    spec = listed.spec if listed else None
    return {"name": route.name, "model": route.name, "modified_at": ollama.iso(route.created or time.time()),
            "size": (listed.need_bytes if listed else None) or 0,
            "digest": hashlib.sha256((spec.model_dump_json() if spec else route.name).encode()).hexdigest(),
            "details": ollama.details((spec.model or spec.hf or "") if spec else "")}


def _pending(ctx: GatewayContext) -> None:
    if not ctx.registry.synced:
        raise errors.model_list_pending(getattr(ctx.registry, "error", None))


@router.get("/tags", summary="Models (Ollama's list)")
async def tags(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    _pending(ctx)
    return JSONResponse({"models": [_entry(ctx, r) for r in ctx.registry.catalog().routes]})


@router.get("/ps", summary="Loaded models (Ollama's ps), with when each unloads")
async def ps(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    _pending(ctx)
    state = ctx.lifecycle.state if ctx.lifecycle is not None else None
    out = []
    for route in ctx.registry.catalog().routes:
        entry = _entry(ctx, route)
        model = state.models.get(route.name) if state is not None else None
        if model is not None:
            if model.phase is not Phase.READY:
                continue
            held = sum(model.held.values())
            entry["size"] = held or entry["size"]
            entry["size_vram"] = sum(n for p, n in model.held.items() if p.startswith("gpu"))
            ttl = model.policy.ttl_s
            if model.policy.pinned or ttl <= 0:
                entry["expires_at"] = FOREVER
            else:
                left = max(0.0, ttl - (ctx.lifecycle.clock() - model.last_used))
                entry["expires_at"] = ollama.iso(time.time() + left)
        elif route.state is ModelState.READY:
            entry.update(size_vram=0, expires_at=FOREVER)
        else:
            continue
        listed = _listed(ctx, route.name)
        if ctx_size := (listed.spec.ctx_size if listed and listed.spec else None):
            entry["context_length"] = ctx_size
        out.append(entry)
    return JSONResponse({"models": out})


@router.post("/show", **_doc("One model's details (Ollama's show)"))
async def show(request: Request) -> JSONResponse:
    ctx = _ctx(request)
    body = await _body(request)
    route = resolve(ctx, _name(ctx, _checked(ollama.model_of, body)))
    listed = _listed(ctx, route.name)
    spec = listed.spec if listed else None
    entry = _entry(ctx, route)
    info = {"general.architecture": entry["details"]["family"], "llamadock.aliases": list(route.aliases),
            "llamadock.state": route.state.value}
    if spec and spec.ctx_size:
        info["llamadock.context_length"] = spec.ctx_size
    parameters = "\n".join(f"{k} {v}" for k, v in (("num_ctx", spec.ctx_size if spec else None),
                                                     ("num_parallel", spec.parallel if spec else None)) if v)
    source = (spec.model or spec.hf) if spec else route.name
    return JSONResponse({"modelfile": f"FROM {source}\n",
                         "parameters": parameters, "template": "", "details": entry["details"], "model_info": info,
                         "capabilities": ollama.capabilities(spec), "modified_at": entry["modified_at"]})


@router.get("/version", summary="The Ollama API version served")
async def version() -> JSONResponse:
    return JSONResponse({"version": VERSION})
