"""Where is model X, and is it ready: the one interface routing asks.

``ModelRegistry`` is the seam. ``StaticRegistry`` feeds it from a YAML file
(name -> URL, aliases) and probes each server's ``/health``; the orchestrator
plugs in a live source behind the same interface. Both publish an immutable
``RouteTable``, swapped whole, so a request reads a consistent view without locks.

Static file format (``config/upstreams.yaml``)::

    models:
      qwen3-8b:
        url: http://127.0.0.1:8090
        aliases: ["gpt-4o-mini"]
    providers:            # any OpenAI-compatible server: gateway/routes/providers.py
      lmstudio: {url: http://127.0.0.1:1234}
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Protocol

import httpx
import yaml
from pydantic import BaseModel, Field, StringConstraints, ValidationError, field_validator

from common.files import file_stamp
from contract.listing import ModelState

from .provider_source import ProviderSource
from .providers import PROVIDER_NAME, ProviderEntry, combine
from .table import OWN_PROVIDERS, ModelRoute, RouteTable

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
    model_config = {"extra": "forbid"}  # a misspelt section is said, not silently ignored

    models: dict[str, UpstreamEntry] | None = None
    providers: dict[Annotated[str, StringConstraints(pattern=PROVIDER_NAME)], ProviderEntry] | None = None

    @field_validator("providers")
    @classmethod
    def _not_ours(cls, providers: dict | None) -> dict | None:
        for name in providers or {}:
            if name.casefold() in OWN_PROVIDERS:
                raise ValueError(f"'{name}' names our own models (`{name}:MODEL`); pick another provider name")
        return providers


@dataclass(frozen=True)
class Upstreams:
    """What the upstreams file declares: static models and providers."""

    models: list[ModelRoute]
    providers: dict[str, ProviderEntry]


def _line_of(text: str, loc: tuple) -> int | None:
    """The line (1-based) of the YAML node a validation error's location points at."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if k.value == str(key)), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def read_upstreams(path: Path) -> Upstreams:
    """Parse the static file (state unknown yet). Raises ValueError with the reason and its line."""
    if not path.exists():
        return Upstreams([], {})
    text = path.read_text()
    try:
        parsed = UpstreamsFile.model_validate(yaml.safe_load(text) or {})
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p) or exc
        raise ValueError(f"{path}{where}: not valid YAML: {what}") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error.get("loc", ()))
            line = _line_of(text, loc)
            where = ".".join(str(p) for p in loc)
            problems.append(f"{f'line {line}: ' if line else ''}{where + ': ' if where else ''}{error['msg']}")
        raise ValueError(f"{path}: {'; '.join(problems)}") from None
    now = int(time.time())
    models = [
        ModelRoute(name=name, url=entry.url.rstrip("/"), aliases=tuple(entry.aliases), state=ModelState.STARTING,
                   reason="not checked yet", created=now)
        for name, entry in (parsed.models or {}).items()
    ]
    return Upstreams(models, dict(parsed.providers or {}))


def load_upstreams(path: Path) -> list[ModelRoute]:
    """The static models of the file (``read_upstreams``' models)."""
    return read_upstreams(path).models


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
        self.providers = ProviderSource()
        self._combined: tuple[tuple, RouteTable] | None = None

    def route_table(self) -> RouteTable:
        return self.combined(())

    def combined(self, first: tuple[ModelRoute, ...] | list[ModelRoute]) -> RouteTable:
        """``first`` (the orchestrator's models), then this file's models, then the providers'
        models, in one table. Cached: it is asked for on every request, and changes seldom."""
        key = (first, self._table, self.providers.routes)
        cached = self._combined
        if cached is not None and all(a is b for a, b in zip(cached[0], key)):
            return cached[1]
        names = {r.name for r in first}
        own = [*first, *(r for r in self._table.routes if r.name not in names)]
        table = combine(own, self.providers.routes, self.providers.statuses)
        self._combined = (key, table)
        return table

    async def start(self) -> None:
        await self._tick()  # a correct view before the first request
        self._task = asyncio.create_task(self._loop(), name="static-registry")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.providers.stop()
        await self._client.aclose()

    async def refresh(self, name: str) -> ModelRoute | None:
        known = self.route_table().get(name)
        if known is not None and known.provider is not None:
            await self.providers.refresh(known.provider)  # its model list, read again now
            return self.route_table().get(name)
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
        loaded = self._reload_if_changed()
        routes = list(self._table.routes) if loaded is None else loaded.models
        if loaded is not None:
            await self.providers.configure(loaded.providers)
        probed = await asyncio.gather(*(self._probe(route) for route in routes))
        self._table = RouteTable.of(probed)

    def _reload_if_changed(self) -> Upstreams | None:
        stamp = file_stamp(self.path)
        if stamp == self._stamp and self._stamp is not None:
            return None
        try:
            upstreams = read_upstreams(self.path)
        except ValueError as exc:
            # Keep serving what we had: a typo in the file must not take every model away.
            if self.file_error != str(exc):
                log.error("ignoring the new upstreams file: %s", exc)
            self.file_error = str(exc)
            return None
        self._stamp = stamp
        self.file_error = None
        known = {r.name: r for r in self._table.routes}
        log.info("upstreams file loaded: %d model(s), %d provider(s)", len(upstreams.models), len(upstreams.providers))
        # Keep the known state and creation time of models whose URL did not change.
        models = [
            replace(route, state=known[route.name].state, reason=known[route.name].reason,
                    created=known[route.name].created)
            if route.name in known and known[route.name].url == route.url else route
            for route in upstreams.models
        ]
        return Upstreams(models, upstreams.providers)

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
        files = route.files or (await self._served_file(route.url) if state is ModelState.READY else ())
        return replace(route, state=state, reason=reason, files=files)

    async def _served_file(self, url: str) -> tuple[str, ...]:
        """The GGUF file a llama-server serves (its /props `model_path`), so a request may name the
        file; asked once, when it is first seen ready. Nothing, if it does not say."""
        try:
            props = (await self._client.get(f"{url}/props")).json()
        except (httpx.HTTPError, ValueError):
            return ()
        path = props.get("model_path") if isinstance(props, dict) else None
        return (path.replace("\\", "/").rsplit("/", 1)[-1],) if isinstance(path, str) and path else ()
