"""Wiring: the runtime backend (LLAMADOCK_BACKEND), the manager, its refresh loop, the API."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import catalog
from .app import create_app
from .backends import make_runtime
from .backends.runtime import Runtime
from .manager import ModelManager
from .settings import OrchestratorSettings

log = logging.getLogger("llamadock.orchestrator")


def build(settings: OrchestratorSettings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or OrchestratorSettings()
    try:
        if catalog.ensure_catalog(settings.catalog_file):
            log.info("created %s (your catalog; `make add` fills it)", settings.catalog_file)
    except OSError as exc:  # a read-only config dir: adds will say so; listing and serving still work
        log.error("cannot create %s: %s", settings.catalog_file, exc)
    runtime = runtime or make_runtime(settings)
    manager = ModelManager(runtime, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await manager.refresh()  # binds the manager to this loop before the runtime reports changes
        await runtime.open()
        tasks = [asyncio.create_task(manager.refresh_loop(), name="refresh")]
        if settings.reconcile_on_start:
            tasks.append(asyncio.create_task(_reconcile_at_start(manager), name="reconcile"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runtime.close()

    app = create_app(settings, manager, lifespan)
    app.state.manager = manager
    return app


async def _reconcile_at_start(manager: ModelManager) -> None:
    try:
        report = await manager.reconcile()
        log.info("reconciled with the catalog: %s", report)
    except Exception as exc:
        log.error("reconcile at start failed: %s", exc)
