"""The listing handed to the gateway (contract/listing.py), and its long poll.

Rebuilt from the runtime's instances, the catalog and models/ whenever something changes;
``version`` counts the changes so a client can long-poll for the next one. The catalog and the
GGUF files under models/ are read again only when they changed on disk: an idle stack must not
parse YAML and walk models/ every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone

from common.files import file_stamp
from contract.listing import InstanceInfo, InstanceState, Listing, ModelState, ModelStatus
from contract.nodes import NodeView
from contract.spec import ModelSpec

from . import catalog as catalog_file
from .backends.runtime import LIVE, Instance, Runtime
from .catalog_edits import CatalogEdits
from .estimate import estimate_spec
from .kv_key import kv_key, source_identity
from .launch import describe_launch
from .model_state import STARTING, model_state, uptime_s
from .records import Records
from .settings import OrchestratorSettings

log = logging.getLogger("llamadock.orchestrator")

STARTING_REFRESH_S = 0.1  # while a model starts: its /health is probed this often
IDLE_CHECK_S = 5.0  # otherwise the catalog and models/ are looked at (stat) this often
FULL_REFRESH_S = 60.0  # and the runtime is asked this often even without a change reported


def _timeless(models: list[ModelStatus]) -> list[ModelStatus]:
    """The statuses without what changes by itself (uptime): what a change is judged on."""
    return [m.model_copy(update={"uptime_s": None}) for m in models]


def _ageless(nodes: list[NodeView]) -> list[NodeView]:
    """The nodes without their facts' age (a node going stale shows as its facts going unknown)."""
    return [n.model_copy(update={"facts_age_s": None}) for n in nodes]


def instance_info(instance: Instance) -> InstanceInfo:
    return InstanceInfo(
        id=instance.id[:12], name=instance.name, node=instance.node, state=instance.state, health=instance.health,
        image=instance.image, started_at=None if instance.started_at is None else instance.started_at.isoformat(),
        exit_code=instance.exit_code, restart_count=instance.restart_count)


class LiveListing:
    def __init__(self, runtime: Runtime, records: Records, catalog: CatalogEdits,
                 settings: OrchestratorSettings) -> None:
        self.runtime = runtime
        self.records = records
        self.catalog = catalog
        self.settings = settings
        # Versions start at the boot time in ms, so they keep growing across restarts
        # and a gateway long-polling with an old version is answered at once.
        self.current = Listing(version=time.time_ns() // 1_000_000, host=runtime.host)
        self._changed = asyncio.Condition()
        self._refreshing = asyncio.Lock()
        self._kick = asyncio.Event()
        self._catalog_seen: tuple | None = None  # (file stamp, specs, error)
        self._available_seen: tuple | None = None  # (tree stamp, declared paths, undeclared files)

    async def refresh(self) -> Listing:
        """Rebuild the listing from the runtime and the catalog; bump the version if anything changed.

        One at a time: a listing's version then orders the runtime reads, not only their ends. Two
        refreshes at once could end in the wrong order, and one that read the runtime before a start
        would get a newer version than the start's own answer: the gateway would take the model
        for stopped, and start its swap rival beside it."""
        async with self._refreshing:
            return await self._refresh()

    async def _refresh(self) -> Listing:
        records = self.records
        stops_before = records.stops
        under_way = records.stopping()  # a stop that ends while the runtime is read: its instances are stale
        instances = await self.runtime.instances()
        specs, catalog_error = await asyncio.to_thread(self._catalog_if_changed)
        await self._probe_starting(instances)
        available = await asyncio.to_thread(self._available_if_changed, specs)
        # In a thread: the first look at a GGUF's metadata (for its memory estimate) takes a while.
        stopping = under_way | records.stopping() | records.stopped_since(stops_before)
        models = await asyncio.to_thread(self._statuses, specs, instances, stopping)
        if late := records.stopped_since(stops_before) - stopping:
            # A stop began after the runtime was read (its instance says running, not ready:
            # "starting"). The gateway would take that for a start it did not ask for and start
            # the model again.
            stopping |= late
            models = self._statuses(specs, instances, stopping)
        # A broken catalog reads as no specs: the models that run are still described, with the error.
        fresh = self.current.model_copy(update={
            "models": models, "available": available, "catalog_error": catalog_error,
            "pools": self.runtime.pools(instances), "nodes": self.runtime.node_views()})
        now = self.current
        if (_timeless(fresh.models), fresh.available, fresh.catalog_error, fresh.pools, _ageless(fresh.nodes)) != (
                _timeless(now.models), now.available, now.catalog_error, now.pools, _ageless(now.nodes)):
            fresh.version = now.version + 1
            self.current = fresh
            async with self._changed:
                self._changed.notify_all()
        else:  # only the uptimes moved on: fresh figures for whoever asks, no change to wake the gateway for
            self.current = fresh
        return self.current

    # ---- what is on disk -------------------------------------------------------------------

    def _catalog_if_changed(self) -> tuple[dict[str, ModelSpec], str | None]:
        """(specs, error) of the catalog, parsed again only when the file changed (any thread)."""
        stamp = file_stamp(self.settings.catalog_file)  # before reading: never stale under a new stamp
        seen = self._catalog_seen
        if seen is None or stamp is None or seen[0] != stamp:
            try:
                specs, error = self.catalog.read(), None
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

    # ---- the statuses ------------------------------------------------------------------------

    def _statuses(self, specs: dict[str, ModelSpec], instances: list[Instance],
                  stopping: frozenset[str] = frozenset()) -> list[ModelStatus]:
        by_model = {i.model: i for i in instances}
        now = datetime.now(timezone.utc)
        out = []
        for name in sorted(set(specs) | set(by_model)):
            instance = by_model.get(name)
            spec = specs.get(name) or (instance.spec if instance else None)
            probed = instance is not None and self.records.is_ready(name, instance.id)
            state, reason = model_state(instance, probed, name in stopping)
            if instance is None and (failure := self.records.failure(name)) is not None:
                state, reason = ModelState.FAILED, failure
            if name not in specs and instance is not None:
                reason = (reason + "; " if reason else "") + "not declared in the catalog (reconcile removes it)"
            out.append(ModelStatus(
                name=name, declared=name in specs, spec=spec,
                aliases=list(spec.aliases) if spec else [],
                state=state, reason=reason,
                url=instance.url if instance else None,
                instance=None if instance is None else instance_info(instance),
                pids=list(instance.pids) if instance else [],
                uptime_s=None if (u := uptime_s(instance, now)) is None else round(u, 1),
                kv_key=self._kv_key(instance.spec if instance is not None and instance.state in LIVE
                                    and instance.spec is not None else spec),
                absent_on=self.runtime.absent_on(spec) if spec is not None else {},
                **self._need(specs.get(name)),
            ))
        return out

    def need_of(self, spec: ModelSpec) -> dict:
        """``need_bytes``, ``need_detail`` and ``estimate`` of a spec (declared or not yet); any thread."""
        return self._need(spec)

    def _kv_key(self, spec: ModelSpec | None) -> str | None:
        """The KV cache key of the server that runs (its own spec), or of the one the next start
        makes (the declared spec: a container of another spec is recreated then)."""
        if spec is None:
            return None
        size = mtime = None
        if spec.model is not None:
            try:
                found = (self.settings.models_dir / spec.model).stat()
                size, mtime = found.st_size, found.st_mtime_ns
            except OSError:
                pass
        launch = describe_launch(spec, gpu=self.runtime.gpu)
        return kv_key(launch, image=self.runtime.image(self.catalog.effective(spec)), source=source_identity(spec.model, size, mtime, spec.hf))

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
        record = self.records[spec.name]
        if record.estimate is None or record.estimate[0] != key:  # reading GGUF metadata costs ms: once per file version
            # Without a GPU every layer, the token embedding included, lands in RAM; no CUDA process.
            found = estimate_spec(spec, self.settings.models_dir, device="gpu" if self.runtime.gpu else "cpu")
            record.estimate = (key, {} if found is None else {
                "need_bytes": found.total_bytes, "need_detail": "estimated: " + found.describe(),
                "estimate": found})
        return record.estimate[1]

    async def _probe_starting(self, instances: list[Instance]) -> None:
        """Ask /health of running instances the backend does not call healthy yet: readiness
        within one probe, not one healthcheck interval (5 s)."""
        running = [i for i in instances if i.state is InstanceState.RUNNING]
        self.records.keep_ready_only(i.id for i in running)
        pending = [i for i in running if not self.records.is_ready(i.model, i.id) and not i.ready and i.probe_url]
        results = await asyncio.gather(*(self.runtime.healthy(i) for i in pending))
        for instance, ok in zip(pending, results):
            if ok:
                self.records.mark_ready(instance.model, instance.id)

    # ---- the long poll and the refresh loop -----------------------------------------------------

    async def wait_change(self, after: int, timeout: float) -> Listing:
        """The listing once its version is past ``after`` (or after ``timeout``): a long poll."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.current.version > after), timeout)
            except TimeoutError:
                pass
        return self.current

    def kick(self) -> None:
        """Refresh soon (on the loop: the manager hands a thread's kick over)."""
        self._kick.set()

    async def refresh_loop(self) -> None:
        """Refresh on a change the runtime reports (it kicks), quickly while a model is starting (its
        /health is probed), when the catalog or models/ change on disk, and every FULL_REFRESH_S
        anyway (a change lost while the backend was away). An idle stack costs a few stat calls
        every IDLE_CHECK_S, not a listing of every instance."""
        last_full = time.monotonic()
        while True:
            starting = any(m.state == STARTING for m in self.current.models)
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
            except Exception:  # backend hiccups must not end the loop
                log.exception("refreshing the model view failed")
