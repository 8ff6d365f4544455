"""Wiring: Docker client, host and stack facts, the manager, its background readers, the API."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import docker
from fastapi import FastAPI

from . import catalog
from .app import create_app
from .backends.docker.discovery import own_container_attrs, stack_facts
from .backends.docker.host import detect_host
from .manager import ModelManager
from .settings import OrchestratorSettings
from .backends.docker.watch import EventWatcher, LogCopier

log = logging.getLogger("llamadock.orchestrator")


def build(settings: OrchestratorSettings | None = None, client: docker.DockerClient | None = None) -> FastAPI:
    settings = settings or OrchestratorSettings()
    client = client or docker.from_env()
    host = detect_host(client.info(), settings.gpu)
    for warning in host.warnings:
        log.warning("%s", warning)
    try:
        if catalog.ensure_catalog(settings.catalog_file):
            log.info("created %s (your catalog; `make add` fills it)", settings.catalog_file)
    except OSError as exc:  # a read-only config dir: adds will say so; listing and serving still work
        log.error("cannot create %s: %s", settings.catalog_file, exc)
    stack = stack_facts(settings, own_container_attrs(client))
    log.info("host: %s; project %s, network %s, models in %s", host.kind, stack.project, stack.network,
             stack.models_dir)
    manager = ModelManager(client, settings, stack, host)
    copier = LogCopier(client) if settings.follow_model_logs else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()

        def on_event(event: dict) -> None:  # on the watcher's thread
            action = event.get("Action") or event.get("status") or ""
            cid = event.get("id") or event.get("Actor", {}).get("ID", "")
            if action.startswith("exec_"):
                return  # each healthcheck run is an exec: every 5 s per model, and no change of state
            if action in ("die", "stop", "kill", "restart", "destroy"):
                loop.call_soon_threadsafe(manager.forget_ready, cid)
            if action == "start" and copier is not None:
                copier.follow(cid, since_now=False)
            loop.call_soon_threadsafe(manager.kick)

        watcher = EventWatcher(client, stack.project, on_event,
                               on_connect=lambda: loop.call_soon_threadsafe(manager.kick))
        watcher.start()
        await manager.refresh()
        if copier is not None:
            for model in manager.listing.models:
                if model.container and model.container.status == "running":
                    copier.follow(model.container.id, since_now=True)
        tasks = [asyncio.create_task(manager.refresh_loop(), name="refresh")]
        if settings.reconcile_on_start:
            tasks.append(asyncio.create_task(_reconcile_at_start(manager), name="reconcile"))
        try:
            yield
        finally:
            watcher.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    app = create_app(settings, manager, lifespan)
    app.state.manager = manager
    return app


async def _reconcile_at_start(manager: ModelManager) -> None:
    try:
        report = await manager.reconcile()
        log.info("reconciled with the catalog: %s", report)
    except Exception as exc:
        log.error("reconcile at start failed: %s", exc)
