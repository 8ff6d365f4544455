"""The operations on model containers: add, remove, restart, list, logs, reconcile.

The decisions are pure (spec.py, containers.py, status.py, plan.py); this module does the
effects through the Docker SDK, which blocks, so every call runs in a thread.
One asyncio lock per model name makes each operation atomic for that name: ten
concurrent adds of one model give one container, and reconcile never removes a
container that an add is still starting.

The view handed to the gateway is a listing (contract/listing.py) rebuilt from Docker (labels, state)
and the catalog whenever something changes; ``version`` counts the changes so a
client can long-poll for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import AsyncIterator

import docker
import docker.errors
import httpx

from common.errors import ApiError
from common.files import file_stamp
from contract.listing import ContainerInfo, HostInfo, Listing, ModelState, ModelStatus, ReconcileReport
from contract.spec import ModelSpec

from . import catalog as catalog_file
from .estimate import estimate_spec
from .backends.docker.containers import (LABEL_MODEL, LABEL_PLACEMENT, LABEL_PROJECT, Placement, StackFacts, create_kwargs,
                         spec_hash)
from .errors import catalog_not_saved, not_found
from .backends.docker.host import HostFacts
from .oom import out_of_gpu_memory
from .plan import Decision, Reuse, Wanted, needs_placement, plan
from .settings import OrchestratorSettings
from .sources import SourceError, check_sources
from .backends.docker.status import STARTING, ContainerView, container_view, model_state, model_url, uptime_s

log = logging.getLogger("llamadock.orchestrator")

LOG_TAIL_ON_FAILURE = 40
STARTING_REFRESH_S = 0.1  # while a model starts: its /health is probed this often
IDLE_CHECK_S = 5.0  # otherwise the catalog and models/ are looked at (stat) this often
FULL_REFRESH_S = 60.0  # and Docker is asked this often even without an event


def _timeless(models: list[ModelStatus]) -> list[ModelStatus]:
    """The statuses without what changes by itself (uptime): what a change is judged on."""
    return [m.model_copy(update={"uptime_s": None}) for m in models]


class ModelManager:
    def __init__(self, client: docker.DockerClient, settings: OrchestratorSettings, stack: StackFacts,
                 host: HostFacts) -> None:
        self.client = client
        self.settings = settings
        self.stack = stack
        self.host = host
        # Versions start at the boot time in ms, so they keep growing across restarts
        # and a gateway long-polling with an old version is answered at once.
        self.listing = Listing(version=time.time_ns() // 1_000_000, host=HostInfo(kind=host.kind, warnings=list(host.warnings)))
        self._locks: dict[str, asyncio.Lock] = {}
        self._catalog_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._refreshing = asyncio.Lock()
        self._ready_ids: set[str] = set()  # containers our probe saw answer /health since they started
        self._stopping: set[str] = set()  # models whose stop is under way (reported stopped, never starting)
        self._stops = 0  # stops begun so far; and for each model, the number of its last one:
        self._stop_began: dict[str, int] = {}  # a refresh that read Docker before it must not report it running
        self._failures: dict[str, str] = {}  # declared models that could not be started, and why
        self._kick = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that owns the state above
        self._estimates: dict[tuple, dict] = {}
        # The catalog and the GGUF files under models/ are read again only when they changed on disk
        # (an idle stack must not parse YAML and walk models/ every few seconds).
        self._catalog_seen: tuple | None = None  # (file stamp, specs, error)
        self._available_seen: tuple | None = None  # (tree stamp, declared paths, undeclared files)
        self._probe = httpx.AsyncClient(timeout=httpx.Timeout(1.0), limits=httpx.Limits(max_keepalive_connections=0))

    # ---- reading -------------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        self._bind_loop()
        return self._locks.setdefault(name, asyncio.Lock())

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    def _on_loop(self, work, *args) -> None:
        """Run ``work`` on the manager's loop. The manager's state and its asyncio objects
        belong to that loop; the Docker SDK's blocking calls run in threads, which must hand
        their changes over rather than make them (an Event set from a thread may never wake
        its waiter, and asyncio's debug mode refuses it)."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if self._loop is None or here is self._loop:
            work(*args)  # on the loop (or before it runs: then no waiter exists yet)
        else:
            self._loop.call_soon_threadsafe(work, *args)

    def _catalog(self) -> dict[str, ModelSpec]:
        return catalog_file.load_catalog(self.settings.catalog_file)

    def _containers(self) -> list[ContainerView]:
        found = self.client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={self.stack.project}"})
        return [container_view(c.attrs, self.stack.network) for c in found]

    def _container_of(self, name: str) -> ContainerView | None:
        return next((v for v in self._containers() if v.model == name), None)

    async def refresh(self) -> Listing:
        """Rebuild the listing from Docker and the catalog; bump the version if anything changed.

        One at a time: a listing's version then orders the Docker reads, not only their ends. Two
        refreshes at once could end in the wrong order, and one that read Docker before a start
        would get a newer version than the start's own answer: the gateway would take the model
        for stopped, and start its swap rival beside it."""
        self._bind_loop()
        async with self._refreshing:
            return await self._refresh()

    async def _refresh(self) -> Listing:
        stops_before = self._stops
        under_way = frozenset(self._stopping)  # a stop that ends while Docker is read: its views are stale
        views = await asyncio.to_thread(self._containers)
        specs, catalog_error = await asyncio.to_thread(self._catalog_if_changed)
        await self._probe_starting(views)
        available = await asyncio.to_thread(self._available_if_changed, specs)
        # In a thread: the first look at a GGUF's metadata (for its memory estimate) takes a while.
        stopping = under_way | self._stopping | self._stopped_since(stops_before)
        models = await asyncio.to_thread(self._statuses, specs, views, stopping)
        if late := self._stopped_since(stops_before) - stopping:
            # A stop began after Docker was read (its views say running, not ready: "starting"). The
            # gateway would take that for a start it did not ask for and start the model again.
            stopping |= late
            models = self._statuses(specs, views, stopping)
        if catalog_error is None or not self.listing.models:
            fresh = self.listing.model_copy(update={"models": models, "available": available,
                                                    "catalog_error": catalog_error})
        else:  # a broken catalog edit: keep describing the models we know, and say what is wrong
            fresh = self.listing.model_copy(update={"models": self._statuses({}, views, stopping),
                                                    "available": available, "catalog_error": catalog_error})
        if (_timeless(fresh.models), fresh.available, fresh.catalog_error) != (
                _timeless(self.listing.models), self.listing.available, self.listing.catalog_error):
            fresh.version = self.listing.version + 1
            self.listing = fresh
            async with self._changed:
                self._changed.notify_all()
        else:  # only the uptimes moved on: fresh figures for whoever asks, no change to wake the gateway for
            self.listing = fresh
        return self.listing

    def _stopped_since(self, stops: int) -> frozenset[str]:
        """Models whose stop began after the first ``stops`` stops."""
        return frozenset(name for name, number in self._stop_began.items() if number > stops)

    def _catalog_if_changed(self) -> tuple[dict[str, ModelSpec], str | None]:
        """(specs, error) of the catalog, parsed again only when the file changed (any thread)."""
        stamp = file_stamp(self.settings.catalog_file)  # before reading: never stale under a new stamp
        seen = self._catalog_seen
        if seen is None or stamp is None or seen[0] != stamp:
            try:
                specs, error = self._catalog(), None
            except catalog_file.CatalogError as exc:
                specs, error = {}, str(exc)
            self._catalog_seen = seen = (stamp, specs, error)
        return seen[1], seen[2]

    def _available_if_changed(self, specs: dict[str, ModelSpec]) -> list[str]:
        """GGUF files nothing declares, walked again only when a directory under models/ changed."""
        stamp = catalog_file.tree_stamp(self.settings.models_dir)
        declared = frozenset((spec.model, spec.mmproj) for spec in specs.values())
        seen = self._available_seen
        if seen is None or seen[:2] != (stamp, declared):
            self._available_seen = seen = (stamp, declared,
                                           catalog_file.undeclared_gguf_files(self.settings.models_dir, specs))
        return list(seen[2])

    def _files_changed(self) -> bool:
        """Whether the catalog or the tree under models/ changed since the last refresh read them."""
        catalog, available = self._catalog_seen, self._available_seen
        return catalog is None or available is None or catalog[0] != file_stamp(
            self.settings.catalog_file) or available[0] != catalog_file.tree_stamp(self.settings.models_dir)

    def _statuses(self, specs: dict[str, ModelSpec], views: list[ContainerView],
                  stopping: frozenset[str] = frozenset()) -> list[ModelStatus]:
        by_model = {v.model: v for v in views}
        now = datetime.now(timezone.utc)
        out = []
        for name in sorted(set(specs) | set(by_model)):
            view = by_model.get(name)
            spec = specs.get(name) or (view.spec if view else None)
            state, reason = model_state(view, view is not None and view.id in self._ready_ids, name in stopping)
            if view is None and name in self._failures:
                state, reason = ModelState.FAILED, self._failures[name]
            if name not in specs and view is not None:
                reason = (reason + "; " if reason else "") + "not declared in the catalog (reconcile removes it)"
            out.append(ModelStatus(
                name=name, declared=name in specs, spec=spec,
                aliases=list(spec.aliases) if spec else [],
                state=state, reason=reason,
                url=model_url(view, self.settings.model_url_by) if view else None,
                container=None if view is None else ContainerInfo(
                    id=view.id[:12], name=view.name, status=view.status, health=view.health,
                    image=view.image, started_at=view.started_at, exit_code=view.exit_code,
                    restart_count=view.restart_count),
                pids=[view.pid] if view and view.pid else [],
                uptime_s=None if (u := uptime_s(view, now)) is None else round(u, 1),
                **self._need(specs.get(name)),
            ))
        return out

    def _need(self, spec: ModelSpec | None) -> dict:
        if spec is None:
            return {}
        if spec.memory is not None:
            return {"need_bytes": int(spec.memory), "need_detail": "set in the spec"}
        path = self.settings.models_dir / spec.model if spec.model else None
        try:
            stamp = path.stat().st_mtime_ns if path else None
        except OSError:
            stamp = None
        key = (spec.digest(), stamp)
        if key not in self._estimates:  # reading GGUF metadata costs ms: once per file version
            # Without a GPU every layer, the token embedding included, lands in RAM; no CUDA process.
            found = estimate_spec(spec, self.settings.models_dir, device="gpu" if self.host.gpu else "cpu")
            self._estimates[key] = {} if found is None else {
                "need_bytes": found.total_bytes, "need_detail": "estimated: " + found.describe(),
                "estimate": found}
        return self._estimates[key]

    async def _probe_starting(self, views: list[ContainerView]) -> None:
        """Ask /health of running containers Docker does not call healthy yet: readiness
        within one probe, not one healthcheck interval (5 s)."""
        live = {v.id for v in views if v.status == "running"}
        self._ready_ids &= live
        pending = [v for v in views if v.status == "running" and v.id not in self._ready_ids
                   and v.health != "healthy" and v.ip]
        results = await asyncio.gather(*(self._healthy(v.ip) for v in pending))
        self._ready_ids |= {v.id for v, ok in zip(pending, results) if ok}

    async def _healthy(self, ip: str) -> bool:
        try:
            return (await self._probe.get(f"http://{ip}:8080/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_change(self, after: int, timeout: float) -> Listing:
        """The listing once its version is past ``after`` (or after ``timeout``): a long poll."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.listing.version > after), timeout)
            except TimeoutError:
                pass
        return self.listing

    def forget_ready(self, container_id: str) -> None:
        """The container stopped or is about to: not ready until probed again. Any thread."""
        self._on_loop(self._ready_ids.discard, container_id)

    def kick(self) -> None:
        """Something changed in Docker: refresh soon. Any thread (the event watcher, the
        threads that run Docker calls)."""
        self._on_loop(self._kick.set)

    async def refresh_loop(self) -> None:
        """Refresh on Docker events (the watcher kicks), quickly while a model is starting (its
        /health is probed), when the catalog or models/ change on disk, and every FULL_REFRESH_S
        anyway (an event lost while the daemon restarted). An idle stack costs a few stat calls
        every IDLE_CHECK_S, not a listing of every container."""
        self._bind_loop()
        last_full = time.monotonic()
        while True:
            starting = any(m.state == STARTING for m in self.listing.models)
            try:
                await asyncio.wait_for(self._kick.wait(), STARTING_REFRESH_S if starting else IDLE_CHECK_S)
                kicked = True
            except TimeoutError:
                kicked = False
            self._kick.clear()
            try:
                if not (kicked or starting) and time.monotonic() - last_full < FULL_REFRESH_S \
                        and not await asyncio.to_thread(self._files_changed):
                    continue
                last_full = time.monotonic()
                await self.refresh()
            except Exception:  # Docker hiccups must not end the loop
                log.exception("refreshing the model view failed")

    # ---- operations --------------------------------------------------------------------------

    async def add(self, spec: ModelSpec, *, replace: bool = False) -> tuple[ModelStatus, bool]:
        """Declare and start a model; wait until it answers. Returns (status, created).

        Adding what is already declared with the same spec is a no-op that waits for it."""
        async with self._lock(spec.name):
            specs = await self._load_catalog_or_409()
            current = specs.get(spec.name)
            if current is not None and current != spec and not replace:
                raise ApiError(409, f"A model named '{spec.name}' already exists with a different spec. "
                              "Remove it first, or add with replace=true.", "model_exists", "name")
            self._check_names_free(spec, specs)
            kwargs = create_kwargs(spec, self.host, self.stack)
            # Only the spec the catalog already holds, running, is kept; anything else gets a new container.
            wanted = Wanted(spec_hash(kwargs), reuse=Reuse.RUNNING if current == spec else Reuse.NONE)
            view = await asyncio.to_thread(self._container_of, spec.name)
            if plan(wanted, view) is Decision.KEEP:
                await self._wait_ready(spec, view.id, new=False)
                return await self._status(spec.name), False
            await self._start(spec, kwargs, view)  # CREATE or RECREATE
            try:
                await self._update_catalog(lambda text: catalog_file.render_with_model(text, spec))
            except Exception:
                await asyncio.to_thread(self._remove_container, spec.name)
                raise
            self._failures.pop(spec.name, None)
            return await self._status(spec.name), True

    async def remove(self, name: str) -> None:
        async with self._lock(name):
            specs = await self._load_catalog_or_409()
            view = await asyncio.to_thread(self._container_of, name)
            if view is None and name not in specs:
                raise not_found(name, [m.name for m in self.listing.models])
            await asyncio.to_thread(self._remove_container, name)
            if name in specs:
                await self._update_catalog(lambda text: catalog_file.render_without_model(text, name))
            self._failures.pop(name, None)
        await self.refresh()

    async def restart(self, name: str) -> ModelStatus:
        async with self._lock(name):
            specs = await self._load_catalog_or_409()
            view = await asyncio.to_thread(self._container_of, name)
            if view is None and name not in specs:
                raise not_found(name, [m.name for m in self.listing.models])
            # The spec is not judged: a restart bounces the server there as it is, declared or not.
            if plan(Wanted(spec_hash=None, restart=True), view) is Decision.CREATE:
                await self._start(specs[name], create_kwargs(specs[name], self.host, self.stack), None)
            else:  # RESTART
                self.forget_ready(view.id)
                container = await asyncio.to_thread(self.client.containers.get, view.id)
                await asyncio.to_thread(container.restart, timeout=int(self.settings.stop_grace_s))
                spec = specs.get(name) or view.spec
                await self._wait_ready(spec, view.id, new=False)
        return await self._status(name)

    async def start(self, name: str, placement: Placement | None = None) -> ModelStatus:
        """Run a declared model and wait until it answers (the scheduler's on-demand start).

        ``placement``: the GPUs to run on; a stopped container placed elsewhere is recreated.
        A server that ran out of GPU memory while loading is reported as ``model_out_of_memory``."""
        async with self._lock(name):
            specs = await self._load_catalog_or_409()
            if name not in specs:
                raise not_found(name, list(specs))
            spec = specs[name]
            if placement is not None and spec.gpus != "all" and not set(placement.gpus) <= set(spec.gpus):
                raise ApiError(400, f"Model '{name}' may only use GPUs {list(spec.gpus)}, not {list(placement.gpus)}.",
                              "invalid_placement", "gpus")
            kwargs = create_kwargs(spec, self.host, self.stack, placement)
            # A stopped container is started again only on the GPUs asked for (its placement label).
            wanted = Wanted(spec_hash(kwargs),
                            placement=None if placement is None else kwargs["labels"][LABEL_PLACEMENT])
            view = await asyncio.to_thread(self._container_of, name)
            placed = await asyncio.to_thread(self._placement_label, view.id) if needs_placement(wanted, view) else None
            decision = plan(wanted, view, placed)
            try:
                if decision is Decision.START:
                    self.forget_ready(view.id)
                    container = await asyncio.to_thread(self.client.containers.get, view.id)
                    await asyncio.to_thread(container.start)
                    self.kick()
                    await self._wait_ready(spec, view.id, new=True, restarts_before=view.restart_count)
                elif decision is Decision.KEEP:  # running already, wherever it was placed
                    await self._wait_ready(spec, view.id, new=False)
                else:  # CREATE, or RECREATE (outdated, or stopped on other GPUs)
                    await self._start(spec, kwargs, view)
            except ApiError as exc:
                if exc.code == "model_failed_to_start" and out_of_gpu_memory(exc.log_tail):
                    raise ApiError(503, f"Model '{name}' ran out of GPU memory while loading: {exc.message}",
                                  "model_out_of_memory", log_tail=exc.log_tail) from None
                raise
            self._failures.pop(name, None)
        return await self._status(name)

    def _placement_label(self, container_id: str) -> str:
        return (self.client.containers.get(container_id).labels or {}).get(LABEL_PLACEMENT, "")

    async def stop(self, name: str) -> ModelStatus:
        """Stop a model's server and keep its container, so the next start is quick."""
        async with self._lock(name):
            view = await asyncio.to_thread(self._container_of, name)
            if view is None:
                specs = await self._load_catalog_or_409()
                if name not in specs:
                    raise not_found(name, [m.name for m in self.listing.models])
            elif view.status in ("running", "restarting", "paused"):
                self.forget_ready(view.id)
                self._stopping.add(name)
                self._stops += 1
                self._stop_began[name] = self._stops
                try:
                    container = await asyncio.to_thread(self.client.containers.get, view.id)
                    await asyncio.to_thread(container.stop, timeout=int(self.settings.stop_grace_s))
                finally:
                    self._stopping.discard(name)
                log.info("model %s: stopped", name)
        return await self._status(name)

    async def status(self, name: str) -> ModelStatus:
        status = (await self.refresh()).find(name)
        if status is None:
            raise not_found(name, [m.name for m in self.listing.models])
        return status

    async def logs(self, name: str, tail: int, follow: bool) -> AsyncIterator[bytes]:
        view = await asyncio.to_thread(self._container_of, name)
        if view is None:
            raise not_found(name, [m.name for m in self.listing.models if m.container])
        container = await asyncio.to_thread(self.client.containers.get, view.id)
        stream = await asyncio.to_thread(container.logs, stream=True, follow=follow, tail=tail)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while (chunk := await asyncio.to_thread(next, stream, None)) is not None:
                    yield chunk
            finally:
                stream.close()  # unblocks the reader thread when the client leaves mid-follow
        return chunks()

    async def reconcile(self) -> ReconcileReport:
        """Make Docker match the catalog: start what is preloaded or pinned (the rest start
        on demand), recreate running models whose spec changed, remove our containers
        nothing declares. A broken catalog changes nothing."""
        specs = await self._load_catalog_or_409()
        views = {v.model: v for v in await asyncio.to_thread(self._containers)}
        report = ReconcileReport()

        async def one(name: str) -> None:
            async with self._lock(name):
                view = await asyncio.to_thread(self._container_of, name)
                spec = specs.get(name)
                kwargs = None if spec is None else create_kwargs(spec, self.host, self.stack)
                # Preloaded and pinned models run now; the rest start on their first request.
                wanted = None if spec is None else Wanted(spec_hash(kwargs), run_now=spec.preload or spec.pinned)
                decision = plan(wanted, view)
                if decision is Decision.REMOVE:
                    await asyncio.to_thread(self._remove_container, name)
                    # Declared: an outdated stopped container went, the next start recreates it.
                    (report.removed if spec is None else report.unchanged).append(name)
                elif decision is Decision.START:
                    container = await asyncio.to_thread(self.client.containers.get, view.id)
                    await asyncio.to_thread(container.start)
                    report.started.append(name)
                elif decision in (Decision.CREATE, Decision.RECREATE):
                    try:
                        self._check_names_free(spec, specs)
                        await self._start(spec, kwargs, view, wait=False)
                        self._failures.pop(name, None)
                        (report.started if decision is Decision.CREATE else report.recreated).append(name)
                    except ApiError as exc:
                        self._failures[name] = exc.message
                        report.failed[name] = exc.message
                elif spec is not None:  # KEEP or NOTHING
                    report.unchanged.append(name)

        await asyncio.gather(*(one(name) for name in sorted(set(specs) | set(views))))
        await self.refresh()
        return report

    # ---- effects ---------------------------------------------------------------------------

    async def _load_catalog_or_409(self) -> dict[str, ModelSpec]:
        try:
            return await asyncio.to_thread(self._catalog)
        except catalog_file.CatalogError as exc:
            raise ApiError(409, f"The catalog cannot be read, so nothing was changed: {exc}. Fix the file first.",
                          "catalog_invalid") from None

    async def _update_catalog(self, change) -> None:
        """Write the catalog; a full or read-only filesystem is a clear error, not a 500."""
        async with self._catalog_lock:
            try:
                await asyncio.to_thread(catalog_file.update_catalog, self.settings.catalog_file, change)
            except OSError as exc:
                raise catalog_not_saved(self.settings.catalog_file, exc) from None

    def _check_names_free(self, spec: ModelSpec, specs: dict[str, ModelSpec]) -> None:
        taken = {}
        for other in specs.values():
            if other.name != spec.name:
                for n in (other.name, *other.aliases):
                    taken[n.casefold()] = other.name
        for n in (spec.name, *spec.aliases):
            if n.casefold() in taken:
                raise ApiError(409, f"'{n}' is already a name or alias of model '{taken[n.casefold()]}'.",
                              "name_taken", "aliases" if n != spec.name else "name")

    async def _start(self, spec: ModelSpec, kwargs: dict, old: ContainerView | None, wait: bool = True) -> None:
        """Create and start the container (replacing ``old``); on failure remove it, report its last lines."""
        try:
            await asyncio.to_thread(check_sources, spec, self.settings.models_dir)
        except SourceError as exc:
            raise ApiError(400, str(exc), "invalid_model_source", exc.param) from None
        await asyncio.to_thread(self._ensure_image, kwargs["image"])
        if old is not None:
            await asyncio.to_thread(self._remove_container, spec.name)
        try:
            container = await asyncio.to_thread(self.client.containers.create, **kwargs)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # the name is held by a container we did not label: not ours to remove
                raise ApiError(409, f"A container named {kwargs['name']} exists and is not managed by llamadock.",
                              "container_name_taken", "name") from None
            raise ApiError(500, f"Docker could not create the container: {exc.explanation or exc}.",
                          "docker_error") from None
        try:
            await asyncio.to_thread(container.start)
        except docker.errors.APIError as exc:
            await asyncio.to_thread(self._remove_container, spec.name)
            raise ApiError(500, f"Docker could not start the container: {_gpu_hint(exc)}.", "docker_error") from None
        log.info("model %s: container %s started", spec.name, container.short_id)
        self.kick()
        if wait:
            try:
                await self._wait_ready(spec, container.id, new=True)
            except BaseException:
                await asyncio.to_thread(self._remove_container, spec.name)
                raise

    async def _wait_ready(self, spec: ModelSpec, container_id: str, *, new: bool, restarts_before: int = 0) -> None:
        """Until /health says 200; fails fast when the server exits (a bad file, no memory)."""
        limit = self.settings.download_timeout_s if spec.hf else self.settings.load_timeout_s
        deadline = time.monotonic() + limit
        container = await asyncio.to_thread(self.client.containers.get, container_id)
        checked = 0.0
        while True:
            now = time.monotonic()
            if now - checked >= 0.5:
                checked = now
                await asyncio.to_thread(container.reload)
                view = container_view(container.attrs, self.stack.network)
                if view.status in ("exited", "dead") or (new and view.restart_count > restarts_before):
                    tail = await asyncio.to_thread(_log_tail, container)
                    raise ApiError(422, f"Model '{spec.name}' exited while loading (exit code {view.exit_code}); "
                                  f"its last log line: {tail[-1] if tail else '(none)'}", "model_failed_to_start",
                                  log_tail=tail)
            if view.ip and await self._healthy(view.ip):
                self._ready_ids.add(container_id)
                self.kick()
                return
            if now > deadline:
                tail = await asyncio.to_thread(_log_tail, container)
                raise ApiError(504, f"Model '{spec.name}' did not become ready within {limit:.0f} s.",
                              "model_start_timeout", log_tail=tail)
            await asyncio.sleep(0.02)  # a local GET: cheap, and readiness is seen within 20 ms

    def _ensure_image(self, image: str) -> None:
        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        log.info("pulling %s", image)
        try:
            self.client.images.pull(image)
        except docker.errors.APIError as exc:
            raise ApiError(400, f"The image {image} is not on this machine and could not be pulled "
                          f"({exc.explanation or exc}). Build one with `make llama-image` "
                          "or set LLAMADOCK_LLAMA_IMAGE_CPU / _GPU.", "image_unavailable", "image") from None

    def _remove_container(self, name: str) -> None:
        """SIGTERM, the grace period, SIGKILL, remove: every container of ours for that model."""
        found = self.client.containers.list(all=True, filters={
            "label": [f"{LABEL_PROJECT}={self.stack.project}", f"{LABEL_MODEL}={name}"]})
        for container in found:
            self.forget_ready(container.id)
            try:
                if container.status in ("running", "restarting", "paused"):
                    container.stop(timeout=int(self.settings.stop_grace_s))
                container.remove(force=True)
            except docker.errors.NotFound:
                pass  # already gone: what we wanted
            log.info("model %s: container %s removed", name, container.short_id)
        self.kick()

    async def _status(self, name: str) -> ModelStatus:
        return (await self.refresh()).find(name) or ModelStatus(
            name=name, declared=False, state=ModelState.STOPPED, reason="gone")


def _log_tail(container) -> list[str]:
    try:
        raw = container.logs(tail=LOG_TAIL_ON_FAILURE)
    except docker.errors.APIError:
        return []
    return [line for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]


def _gpu_hint(exc: docker.errors.APIError) -> str:
    text = str(exc.explanation or exc)
    if "could not select device driver" in text or "nvidia" in text.lower():
        return (f"{text}. Docker cannot hand the GPU to containers here: install the NVIDIA Container Toolkit, "
                "or set LLAMADOCK_GPU=none to run on the CPU")
    return text
