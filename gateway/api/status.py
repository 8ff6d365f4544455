"""The gateway's own endpoints: health, status, GPU, metrics (its own and its models')."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contract.gpu import GpuStatus
from contract.listing import ModelState
from contract.status import GatewayStatus, ProviderView

from .. import model_metrics
from ..gpu import with_other_nodes
from .models import model_object
from ..context import GatewayContext
from .schemas import Health

router = APIRouter()


def _context(request: Request) -> GatewayContext:
    return request.app.state.gateway


async def read_gpu(ctx: GatewayContext) -> GpuStatus:
    """This box's GPUs (NVML), then, on a swarm, the other nodes' as their agents report them."""
    listed = ctx.lifecycle.listing.pools if ctx.lifecycle is not None else []
    # The scheduler reads NVML every 2 s while a GPU is seen: one reader, not two.
    if ctx.lifecycle is not None and (recent := ctx.lifecycle.recent_reading()) is not None:
        return with_other_nodes(recent, listed)
    model_pids = {route.name: route.pids for route in ctx.registry.route_table().routes if route.pids}
    # NVML calls block (tens of ms on some drivers): keep them off the event loop.
    return with_other_nodes(await asyncio.to_thread(ctx.gpu.read, model_pids), listed)


@router.get("/health", tags=["Gateway"], response_model=Health, summary="The gateway is up and knows the models",
            responses={503: {"model": Health, "description": "Started, but the model list is not known yet."}})
async def health(request: Request, response: Response) -> Health:
    # Unhealthy until the first model list arrived, so `make up --wait` and services that
    # depend on the gateway wait for it. That alone is not enough: Docker sends traffic to a
    # published port whatever the container's health, so routes answer 503 meanwhile too.
    registry = _context(request).registry
    if not registry.synced:
        response.status_code = 503
        return Health(status="starting", reason=registry.error)
    return Health()


@router.get("/gpu", tags=["Gateway"], response_model=GpuStatus,
            summary="GPUs through NVML: memory, utilization, temperature, power, VRAM per model")
async def gpu(request: Request) -> GpuStatus:
    return await read_gpu(_context(request))


@router.get("/status", tags=["Gateway"], response_model=GatewayStatus, summary="Models and GPUs in one view")
async def status(request: Request) -> GatewayStatus:
    ctx = _context(request)
    table = ctx.registry.route_table()
    providers = [ProviderView(name=p.name, url=p.url, state=p.state, reason=p.reason, code=p.code, models=p.models)
                 for p in table.providers.values()]
    return GatewayStatus(models=[model_object(r) for r in table.routes], gpu=await read_gpu(ctx),
                         providers=providers, upstreams_file_error=ctx.registry.file_error,
                         orchestrator_error=ctx.registry.error,
                         scheduler=ctx.lifecycle.describe() if ctx.lifecycle else None)


@router.get("/metrics", tags=["Gateway"], summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    # The gateway's own series, then each ready model's llama-server series with a `model` label.
    # Models are scraped first so that this scrape's misses are already in the error counter.
    ctx = _context(request)
    # Our own servers only: a provider's /metrics (if any) is its own business, and may need its key.
    urls = {r.name: r.url for r in ctx.registry.route_table().routes
            if r.state is ModelState.READY and r.url and r.provider is None}
    scraped = await model_metrics.scrape(urls)
    for name, reason in scraped.errors.items():
        ctx.metrics.model_scrape_errors.labels(name, reason).inc()
    body = generate_latest(ctx.metrics.registry) + generate_latest(model_metrics.Families(scraped.families))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
