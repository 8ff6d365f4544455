"""The providers' models, discovered: one task per provider reads its ``GET /v1/models`` every
``refresh_s`` and publishes its models as routes (gateway/routes/providers.py decides what they
are). Each call is bounded (connect, read, size), so a provider that is down, stalls or answers
garbage costs a few seconds of its own task and nothing else. The last models seen stay listed,
in the provider's new state, so a request for one is told the provider is down (503 naming it),
not that the model does not exist.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Mapping

import httpx

from .providers import DiscoveryError, ProviderEntry, key_header, model_ids, provider_routes, status_of
from .table import ModelRoute, ProviderStatus

log = logging.getLogger("llamadock.providers")

MAX_LISTING_BYTES = 4 * 2**20  # a model list; anything bigger is not one
FIRST_WAIT_S = 2.0  # how long a (re)load waits for new providers' first model lists


class ProviderSource:
    def __init__(self, environ: Mapping[str, str] = os.environ, connect_timeout_s: float = 2.0,
                 read_timeout_s: float = 5.0) -> None:
        self._environ = environ
        self._entries: dict[str, ProviderEntry] = {}
        self._ids: dict[str, list[str]] = {}
        self._status: dict[str, ProviderStatus] = {}
        self._created: dict[str, dict[str, int]] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._asked: dict[str, asyncio.Event] = {}  # set once a provider's first discovery ended
        self.routes: tuple[ModelRoute, ...] = ()
        self.statuses: dict[str, ProviderStatus] = {}
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
                                         trust_env=False)

    async def configure(self, entries: Mapping[str, ProviderEntry]) -> None:
        """Serve these providers: new or changed ones are discovered now, then on their own clock."""
        changed = [n for n, e in entries.items() if self._entries.get(n) != e]
        for name in [n for n in self._entries if n not in entries or n in changed]:
            self._forget(name)
        self._entries = dict(entries)
        for name in changed:
            self._status[name] = status_of(name, entries[name], "not asked yet", "provider_unavailable", 0)
            self._asked[name] = asyncio.Event()
            self._tasks[name] = asyncio.create_task(self._loop(name), name=f"provider-{name}")
        # Their models listed before the first request, if they answer soon; one that stalls is
        # waited for in the background, not by the gateway's start.
        waits = [asyncio.ensure_future(self._asked[name].wait()) for name in changed]
        if waits:
            await asyncio.wait(waits, timeout=FIRST_WAIT_S)
            for wait in waits:
                wait.cancel()

    async def refresh(self, name: str) -> None:
        """Read one provider's model list now."""
        entry = self._entries.get(name)
        if entry is None:
            return
        auth, missing = key_header(entry, self._environ)
        if missing:
            error, code, ids = missing, "provider_auth_failed", self._ids.get(name, [])
        else:
            error, code, ids = await self._discover(entry, auth)
            if error is None:
                self._ids[name] = ids
            else:
                ids = self._ids.get(name, [])  # keep what it served: a request is told it is down
        if self._entries.get(name) is not entry:
            return  # reconfigured meanwhile: this answer is for a provider that is gone
        before = self._status.get(name)
        self._status[name] = status_of(name, entry, error, code, len(ids))
        if before is None or (before.reason, before.models) != (error, len(ids)):
            if error:
                log.warning("provider %s (%s): %s", name, entry.url, error)
            else:
                log.info("provider %s (%s): %d model(s)", name, entry.url, len(ids))
        now = int(time.time())
        created = self._created.setdefault(name, {})
        for model_id in ids:
            created.setdefault(model_id, now)
        self._publish()

    async def stop(self) -> None:
        for name in list(self._tasks):
            self._forget(name)
        await self._client.aclose()

    async def _loop(self, name: str) -> None:
        asked = self._asked[name]
        while True:
            try:
                await self.refresh(name)
            except Exception:  # never let a provider's loop die; the next round retries
                log.exception("provider %s: discovery failed", name)
            asked.set()
            await asyncio.sleep(self._entries[name].refresh_s)

    async def _discover(self, entry: ProviderEntry, auth: bytes | None) -> tuple[str | None, str | None, list[str]]:
        """(error, its code, model ids): one bounded ``GET /v1/models``."""
        headers = {"authorization": auth.decode("latin-1")} if auth else {}
        try:
            async with self._client.stream("GET", f"{entry.url}/v1/models", headers=headers) as response:
                if response.status_code in (401, 403):
                    key = f"the API key in {entry.api_key_env}" if entry.api_key_env else "a request without an API key"
                    return (f"it refused {key} (HTTP {response.status_code} on /v1/models)", "provider_auth_failed", [])
                if response.status_code != 200:
                    return f"its /v1/models answered HTTP {response.status_code}", "provider_error", []
                body = bytearray()
                async for part in response.aiter_bytes():
                    body += part
                    if len(body) > MAX_LISTING_BYTES:
                        return f"its /v1/models is larger than {MAX_LISTING_BYTES} bytes", "provider_garbage", []
            return None, None, model_ids(bytes(body))
        except DiscoveryError as exc:
            return str(exc), "provider_garbage", []
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return f"cannot connect to {entry.url} ({exc or type(exc).__name__})", "provider_unavailable", []
        except httpx.TimeoutException:
            return f"{entry.url}/v1/models did not answer in time", "provider_timeout", []
        except httpx.HTTPError as exc:
            return f"{entry.url}/v1/models failed: {exc or type(exc).__name__}", "provider_garbage", []

    def _forget(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        for table in (self._ids, self._status, self._created, self._asked):
            table.pop(name, None)
        self._publish()

    def _publish(self) -> None:
        routes: list[ModelRoute] = []
        for name, entry in self._entries.items():
            status = self._status.get(name)
            if status is None:
                continue
            auth, _ = key_header(entry, self._environ)
            routes += provider_routes(name, entry, self._ids.get(name, []), status, auth, self._created.get(name, {}))
        self.routes = tuple(routes)  # swapped whole: a request reads one consistent view
        self.statuses = dict(self._status)
