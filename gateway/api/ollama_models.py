"""Ollama's view of the models (/api/tags, /api/ps, /api/show, /api/version), for apps that speak
Ollama. Its requests (/api/chat, /api/generate, /api/embed) are the Ollama dialect's, in
gateway/api/ollama.py, over the one exchange. Errors: {"error": "..."}."""

from __future__ import annotations

import hashlib
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from contract.listing import ModelState, ModelStatus
from contract.pools import is_gpu

from .. import errors
from . import ollama_translation as ollama
from ..auth import require_api_key
from ..context import GatewayContext
from .ollama import checked, parsed
from ..proxy.exchange import context, known_name, read_body, resolve
from ..routes.table import ModelRoute
from ..scheduling.scheduler import Phase

router = APIRouter(prefix="/api", tags=["Ollama"], dependencies=[Depends(require_api_key)])

VERSION = "0.12.0"  # the Ollama API version whose shapes these follow
FOREVER = "2318-06-12T00:00:00Z"  # Ollama's expires_at for a model kept loaded for good


def _doc(summary: str) -> dict:
    return {"summary": summary, "openapi_extra": {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["model"]}}}}}}


def _listed(ctx: GatewayContext, name: str) -> ModelStatus | None:
    """The orchestrator's status of a model; None for a static upstream."""
    return ctx.lifecycle.listing.find(name) if ctx.lifecycle is not None else None


# ---- models ----------------------------------------------------------------------------------------

def _entry(ctx: GatewayContext, route: ModelRoute) -> dict:
    listed = _listed(ctx, route.name)
    spec = listed.spec if listed else None
    return {"name": route.name, "model": route.name, "modified_at": ollama.iso(route.created or time.time()),
            "size": (listed.need_bytes if listed else None) or 0,
            "digest": hashlib.sha256((spec.model_dump_json() if spec else route.name).encode()).hexdigest(),
            "details": ollama.details((spec.model or spec.hf or "") if spec else ""),
            "provider": route.provider}  # llamadock's: where it comes from (null: one of ours); clients ignore it


def _pending(ctx: GatewayContext) -> None:
    if not ctx.registry.synced:
        raise errors.model_list_pending(ctx.registry.error)


@router.get("/tags", summary="Models (Ollama's list)")
async def tags(request: Request) -> JSONResponse:
    ctx = context(request)
    _pending(ctx)
    return JSONResponse({"models": [_entry(ctx, r) for r in ctx.registry.route_table().routes]})


@router.get("/ps", summary="Loaded models (Ollama's ps), with when each unloads")
async def ps(request: Request) -> JSONResponse:
    ctx = context(request)
    _pending(ctx)
    state = ctx.lifecycle.state if ctx.lifecycle is not None else None
    out = []
    for route in ctx.registry.route_table().routes:
        if route.provider is not None:
            continue  # another server's model: whether it is loaded there is not known here
        entry = _entry(ctx, route)
        model = state.models.get(route.name) if state is not None else None
        if model is not None:
            if model.phase is not Phase.READY:
                continue
            held = sum(model.held.values())
            entry["size"] = held or entry["size"]
            entry["size_vram"] = sum(n for p, n in model.held.items() if is_gpu(p))
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
    ctx = context(request)
    body = parsed(await read_body(request, ctx.settings.max_body_bytes))
    route = resolve(ctx, known_name(ctx, ollama.candidates(checked(ollama.model_of, body))))
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
