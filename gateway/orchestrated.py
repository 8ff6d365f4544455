"""The live model set, from the orchestrator.

``OrchestratorRegistry`` long-polls the orchestrator's ``GET /models?after=N``: the
answer comes back as soon as anything changes (a model added, ready, crashed,
removed), so the gateway's view lags reality by one HTTP round trip rather than a
poll interval, and costs nothing while nothing happens. If the orchestrator is
away (restarting), the last view stays in use: model containers keep serving.
Until the first listing arrives there is no view at all (``synced`` is False): the
gateway then answers 503 with Retry-After, never "no such model".
Models from the static upstreams file, if any, are served alongside.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Callable

import httpx

from .registry import StaticRegistry
from .routing import Catalog, ModelRoute, ModelState

log = logging.getLogger("llamadock.registry")

STATES = {s.value: s for s in ModelState}


def routes_from_listing(listing: dict, now: int) -> list[ModelRoute]:
    """The orchestrator's ``/models`` answer as routes (pure)."""
    routes = []
    for model in listing.get("models", []):
        container = model.get("container") or {}
        routes.append(ModelRoute(
            name=model["name"], url=model.get("url"), aliases=tuple(model.get("aliases") or ()),
            state=STATES.get(model.get("state"), ModelState.FAILED), reason=model.get("reason"),
            pids=tuple(model.get("pids") or ()), created=now,
            extra={"declared": model.get("declared"), "container": container.get("name"),
                   "uptime_s": model.get("uptime_s")},
        ))
    return routes


class OrchestratorRegistry:
    def __init__(self, url: str, token: str, static: StaticRegistry | None = None,
                 poll_timeout_s: float = 25.0) -> None:
        self.url = url.rstrip("/")
        self.static = static
        self.poll_timeout_s = poll_timeout_s
        self.version = -1
        self.synced = False  # True once a listing arrived: before that, no name is known to be unknown
        self.error: str | None = "not contacted yet"
        self._routes: list[ModelRoute] = []
        self._created: dict[str, int] = {}
        self._catalog = Catalog()
        self._client = httpx.AsyncClient(headers={"authorization": f"Bearer {token}"},
                                         timeout=httpx.Timeout(poll_timeout_s + 10, connect=2.0))
        self._task: asyncio.Task | None = None
        # The newest listing version a start's or stop's own answer is known to be as new as: an
        # older listing still in flight then must not undo it (nor reach the scheduler).
        self._floor = -1
        self.on_listing: Callable[[dict], None] | None = None  # the scheduler hears every listing

    @property
    def current(self) -> bool:
        """While the orchestrator is away (restarting), the last view stays in use but may lack a
        model added just before: a name missing from it is not known to be unknown."""
        return self.synced and self.error is None

    @property
    def file_error(self) -> str | None:
        return self.static.file_error if self.static else None

    def catalog(self) -> Catalog:
        if self.static is None:
            return self._catalog
        # Orchestrated models win a name clash with the static file.
        names = {r.name for r in self._routes}
        return Catalog.of(self._routes + [r for r in self.static.catalog().routes if r.name not in names])

    async def start(self) -> None:
        if self.static:
            await self.static.start()
        try:
            await self._poll(after=None)
        except httpx.HTTPError as exc:
            self.error = f"orchestrator unreachable: {exc}"
            log.warning("%s; retrying in the background", self.error)
        self._task = asyncio.create_task(self._loop(), name="orchestrator-registry")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.static:
            await self.static.stop()
        await self._client.aclose()

    def apply_status(self, model: dict) -> None:
        """One model's fresh status (from a start or stop the gateway asked for), ahead of the next listing."""
        self._floor = max(self._floor, int(model.get("listing_version") or -1))
        (route,) = routes_from_listing({"models": [model]}, int(time.time()))
        route = replace(route, created=self._created.setdefault(route.name, route.created))
        self._routes = [route if r.name == route.name else r for r in self._routes]
        self._catalog = Catalog.of(self._routes)

    async def refresh(self, name: str) -> ModelRoute | None:
        if self.static and any(r.name == name for r in self.static.catalog().routes) \
                and not any(r.name == name for r in self._routes):
            return await self.static.refresh(name)
        try:
            await self._poll(after=None)  # one fresh listing, which also probes starting models
        except httpx.HTTPError:
            pass
        return next((r for r in self._routes if r.name == name), None)

    async def _loop(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._poll(after=self.version)
                backoff = 0.2
            except (httpx.HTTPError, ValueError) as exc:
                if self.error is None:
                    log.warning("lost the orchestrator (%s); keeping the last model view", exc)
                self.error = f"orchestrator unreachable: {exc}"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _poll(self, after: int | None) -> None:
        params = {} if after is None else {"after": after, "timeout": self.poll_timeout_s}
        response = await self._client.get(f"{self.url}/models", params=params)
        response.raise_for_status()
        listing = response.json()
        version = int(listing.get("version", 0))
        if version < self._floor:
            self.version = version  # older than a status already applied: skip it
            return
        now = int(time.time())
        routes = routes_from_listing(listing, now)
        # `created` is when the gateway first saw the model, stable across polls.
        for route in routes:
            self._created.setdefault(route.name, now)
        self._routes = [replace(r, created=self._created[r.name]) for r in routes]
        self._catalog = Catalog.of(self._routes)
        self.version = version
        self.synced = True
        if self.on_listing is not None:
            self.on_listing(listing)
        if self.error is not None:
            log.info("orchestrator view: %d model(s), version %d", len(routes), self.version)
        self.error = None
