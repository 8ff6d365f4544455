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
from pathlib import Path
from typing import Callable

import httpx
from pydantic import ValidationError

from contract.listing import Listing, ModelStatus

from ..orchestrator_link import orchestrator_transport
from .registry import StaticRegistry
from .table import ModelRoute, RouteTable

log = logging.getLogger("llamadock.registry")


class ListingUnreadable(Exception):
    """The orchestrator answered, but not with a listing this gateway reads (another version?)."""


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, ListingUnreadable) else f"orchestrator unreachable: {exc}"


def route_of(model: ModelStatus, created: int) -> ModelRoute:
    """One model of the orchestrator's listing as a route (pure)."""
    files = (model.spec.model,) if model.spec is not None and model.spec.model else ()
    instance = model.instance
    return ModelRoute(name=model.name, url=model.url, aliases=tuple(model.aliases), state=model.state,
                      reason=model.reason, pids=tuple(model.pids), created=created, kv_key=model.kv_key, files=files,
                      run_id=None if instance is None else f"{instance.id}@{instance.started_at}")


class OrchestratorRegistry:
    def __init__(self, url: str, token: str, static: StaticRegistry | None = None,
                 poll_timeout_s: float = 25.0, socket: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.static = static
        self.poll_timeout_s = poll_timeout_s
        self.version = -1
        self.synced = False  # True once a listing arrived: before that, no name is known to be unknown
        self.error: str | None = "not contacted yet"
        self._routes: list[ModelRoute] = []
        self._created: dict[str, int] = {}
        self._table = RouteTable()
        self._client = httpx.AsyncClient(headers={"authorization": f"Bearer {token}"},
                                         timeout=httpx.Timeout(poll_timeout_s + 10, connect=2.0),
                                         transport=orchestrator_transport(socket))
        self._task: asyncio.Task | None = None
        # The newest listing version a start's or stop's own answer is known to be as new as: an
        # older listing still in flight then must not undo it (nor reach the scheduler).
        self._floor = -1
        self.on_listing: Callable[[Listing], None] | None = None  # the scheduler hears every listing

    @property
    def current(self) -> bool:
        """While the orchestrator is away (restarting), the last view stays in use but may lack a
        model added just before: a name missing from it is not known to be unknown."""
        return self.synced and self.error is None

    @property
    def file_error(self) -> str | None:
        return self.static.file_error if self.static else None

    def route_table(self) -> RouteTable:
        if self.static is None:
            return self._table
        # Orchestrated models win a name clash with the static file, and both with a provider's.
        return self.static.combined(self._table.routes)

    async def start(self) -> None:
        if self.static:
            await self.static.start()
        try:
            await self._poll(after=None)
        except (httpx.HTTPError, ListingUnreadable) as exc:
            self.error = _why(exc)
            log.warning("%s; retrying in the background", self.error)
        self._task = asyncio.create_task(self._loop(), name="orchestrator-registry")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.static:
            await self.static.stop()
        await self._client.aclose()

    def apply_status(self, model: ModelStatus) -> None:
        """One model's fresh status (from a start or stop the gateway asked for), ahead of the next listing."""
        if model.listing_version is not None:
            self._floor = max(self._floor, model.listing_version)
        route = route_of(model, self._created.setdefault(model.name, int(time.time())))
        self._routes = [route if r.name == route.name else r for r in self._routes]
        self._table = RouteTable.of(self._routes)

    async def refresh(self, name: str) -> ModelRoute | None:
        if self.static and self.static.route_table().get(name) is not None and self._table.get(name) is None:
            return await self.static.refresh(name)
        try:
            await self._poll(after=None)  # one fresh listing, which also probes starting models
        except (httpx.HTTPError, ListingUnreadable):
            pass
        return self._table.get(name)

    async def _loop(self) -> None:
        backoff = 0.2
        while True:
            try:
                await self._poll(after=self.version)
                backoff = 0.2
            except (httpx.HTTPError, ListingUnreadable) as exc:
                if self.error is None:
                    log.warning("lost the orchestrator (%s); keeping the last model view", exc)
                self.error = _why(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _poll(self, after: int | None) -> None:
        params = {} if after is None else {"after": after, "timeout": self.poll_timeout_s}
        response = await self._client.get(f"{self.url}/models", params=params)
        response.raise_for_status()
        try:
            listing = Listing.model_validate_json(response.content)  # parsed once: everyone reads its fields
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ListingUnreadable(f"the orchestrator's listing does not read as expected ({where}: {first['msg']}); "
                                    "is it another version of llamadock?") from None
        if listing.version < self._floor:
            self.version = listing.version  # older than a status already applied: skip it
            return
        now = int(time.time())
        # `created` is when the gateway first saw the model, stable across polls.
        self._routes = [route_of(m, self._created.setdefault(m.name, now)) for m in listing.models]
        self._table = RouteTable.of(self._routes)
        self.version = listing.version
        self.synced = True
        if self.on_listing is not None:
            self.on_listing(listing)
        if self.error is not None:
            log.info("orchestrator view: %d model(s), version %d", len(self._routes), self.version)
        self.error = None
