"""Where is model X, and is it ready: the one interface routing asks.

``ModelRegistry`` is the seam. ``StaticRegistry`` feeds it from a YAML file
(name -> URL, aliases) and probes each server's ``/health``; the orchestrator
plugs in a live source behind the same interface. Both publish an immutable
``RouteTable``, swapped whole, so a request reads a consistent view without locks.

Static file format (``config/upstreams.yaml``)::

    models:
      qwen3-8b:
        url: http://127.0.0.1:8081
        aliases: ["llamacpp:qwen3", "gpt-4o-mini"]
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import httpx
import yaml
from pydantic import BaseModel, Field, ValidationError

from common.files import file_stamp
from contract.listing import ModelState

from .table import ModelRoute, RouteTable

log = logging.getLogger("llamadock.registry")


class ModelRegistry(Protocol):
    synced: bool  # the model list has been read at least once
    current: bool  # synced, and its source answers now: only then is a name not in it unknown
    error: str | None  # why its source does not answer now (the orchestrator is away), if it does not
    file_error: str | None  # why the static upstreams file was not taken, if it was not

    def route_table(self) -> RouteTable:
        """The current view; cheap, called on every request."""

    async def refresh(self, name: str) -> ModelRoute | None:
        """Re-check one model now (its state may be stale) and return its fresh entry."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class UpstreamEntry(BaseModel):
    url: str = Field(pattern=r"^https?://")
    aliases: list[str] = []


class UpstreamsFile(BaseModel):
    models: dict[str, UpstreamEntry] = {}


def load_upstreams(path: Path) -> list[ModelRoute]:
    """Parse the static file into routes (state unknown yet). Raises ValueError with the reason."""
    if not path.exists():
        return []
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        parsed = UpstreamsFile.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        raise ValueError(f"{path}: {exc}") from None
    now = int(time.time())
    return [
        ModelRoute(name=name, url=entry.url.rstrip("/"), aliases=tuple(entry.aliases), state=ModelState.STARTING,
                   reason="not checked yet", created=now)
        for name, entry in parsed.models.items()
    ]


def state_from_health(status: int | None, error: str | None) -> tuple[ModelState, str | None]:
    """llama-server answers /health 200 when ready and 503 while loading the model."""
    if status == 200:
        return ModelState.READY, None
    if status == 503:
        return ModelState.STARTING, "loading the model"
    if status is None:
        return ModelState.STOPPED, error or "not reachable"
    return ModelState.FAILED, f"/health answered HTTP {status}"


class StaticRegistry:
    """Models from a YAML file, re-read when it changes, each probed on /health."""

    synced = current = True  # the file is read in start(), before the first request
    error = None  # a file has no source to lose; its own problems are file_error

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self.file_error: str | None = None
        self._table = RouteTable()
        self._stamp: tuple[int, int, int] | None = None
        # No keep-alive: a probe's connection must not outlive the probe (a model's
        # server may restart between probes, and idle connections tie it up).
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(2.0, connect=1.0),
                                         limits=httpx.Limits(max_keepalive_connections=0))
        self._task: asyncio.Task | None = None

    def route_table(self) -> RouteTable:
        return self._table

    async def start(self) -> None:
        await self._tick()  # a correct view before the first request
        self._task = asyncio.create_task(self._loop(), name="static-registry")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._client.aclose()

    async def refresh(self, name: str) -> ModelRoute | None:
        route = self._table.get(name)
        if route is None:
            return None
        fresh = await self._probe(route)
        current = self._table
        if current.get(name) is not None:
            self._table = current.with_route(fresh)
        return fresh

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self._tick()
            except Exception:  # never let the refresher die; the next tick retries
                log.exception("registry refresh failed")

    async def _tick(self) -> None:
        routes = self._reload_if_changed()
        if routes is None:
            routes = list(self._table.routes)
        probed = await asyncio.gather(*(self._probe(route) for route in routes))
        self._table = RouteTable.of(probed)

    def _reload_if_changed(self) -> list[ModelRoute] | None:
        stamp = file_stamp(self.path)
        if stamp == self._stamp and self._stamp is not None:
            return None
        try:
            routes = load_upstreams(self.path)
        except ValueError as exc:
            # Keep serving what we had: a typo in the file must not take every model away.
            if self.file_error != str(exc):
                log.error("ignoring the new upstreams file: %s", exc)
            self.file_error = str(exc)
            return None
        self._stamp = stamp
        self.file_error = None
        known = {r.name: r for r in self._table.routes}
        log.info("upstreams file loaded: %d model(s)", len(routes))
        # Keep the known state and creation time of models whose URL did not change.
        return [
            replace(route, state=known[route.name].state, reason=known[route.name].reason,
                    created=known[route.name].created)
            if route.name in known and known[route.name].url == route.url else route
            for route in routes
        ]

    async def _probe(self, route: ModelRoute) -> ModelRoute:
        try:
            response = await self._client.get(f"{route.url}/health")
            state, reason = state_from_health(response.status_code, None)
        except httpx.ConnectError:
            state, reason = state_from_health(None, "its server refuses connections (not running?)")
        except httpx.TimeoutException:
            state, reason = state_from_health(None, "its server does not answer /health")
        except httpx.HTTPError as exc:
            state, reason = state_from_health(None, f"/health failed: {exc}")
        return replace(route, state=state, reason=reason)
