"""The gateway's own endpoints: health, status, GPU, metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .context import GatewayContext
from .gpu import GpuStatus
from .schemas import Health, ModelObject, Status

router = APIRouter()


def _context(request: Request) -> GatewayContext:
    return request.app.state.gateway


async def read_gpu(ctx: GatewayContext) -> GpuStatus:
    catalog = ctx.registry.catalog()
    model_pids = {route.name: route.pids for route in catalog.routes if route.pids}
    # NVML calls block (tens of ms on some drivers): keep them off the event loop.
    return await asyncio.to_thread(ctx.gpu.read, model_pids)


@router.get("/health", tags=["Gateway"], response_model=Health, summary="The gateway is up")
async def health() -> Health:
    return Health()


@router.get("/gpu", tags=["Gateway"], response_model=GpuStatus,
            summary="GPUs through NVML: memory, utilization, temperature, power, VRAM per model")
async def gpu(request: Request) -> GpuStatus:
    return await read_gpu(_context(request))


@router.get("/status", tags=["Gateway"], response_model=Status, summary="Models and GPUs in one view")
async def status(request: Request) -> Status:
    ctx = _context(request)
    catalog = ctx.registry.catalog()
    models = [ModelObject(id=r.name, created=r.created, aliases=list(r.aliases), state=r.state.value, reason=r.reason)
              for r in catalog.routes]
    return Status(models=models, gpu=await read_gpu(ctx),
                  upstreams_file_error=getattr(ctx.registry, "file_error", None),
                  orchestrator_error=getattr(ctx.registry, "error", None),
                  scheduler=ctx.lifecycle.describe() if ctx.lifecycle else None)


@router.get("/metrics", tags=["Gateway"], summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    return Response(generate_latest(_context(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
