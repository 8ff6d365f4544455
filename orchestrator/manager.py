"""The operations on models: add, remove, restart, start, stop, logs, reconcile.

Each is ``plan()`` (plan.py, pure) over what the runtime shows and the catalog declares, carried
out through the ``Runtime`` (backends/runtime.py): the manager never knows which backend runs the
models. One lock per model (its record, records.py) makes each operation atomic for that name:
ten concurrent adds of one model give one instance, and reconcile never removes an instance that
an add is still starting. The listing and its long poll live in listing.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

from common.errors import ApiError
from pydantic import ValidationError

from common.errors import validation_error
from contract.adding import AddCheck
from contract.images import LlamaImages
from contract.listing import InstanceState, Listing, ModelState, ModelStatus, ReconcileReport
from contract.placement import Placement
from contract.spec import ModelSpec

from .backends.runtime import LIVE, STOPPABLE, Change, Instance, Runtime
from .backends.pools import check_where
from .catalog import CatalogDefaults
from .catalog_edits import CatalogEdits, check_names_free
from .errors import not_found
from .listing import LiveListing
from .oom import out_of_gpu_memory
from .plan import Decision, Reuse, Wanted, needs_placement, plan
from .records import Records
from .settings import OrchestratorSettings
from .sources import SourceError, check_sources

log = logging.getLogger("llamadock.orchestrator")

LOG_TAIL_ON_FAILURE = 40


class ModelManager:
    def __init__(self, runtime: Runtime, settings: OrchestratorSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.records = Records()
        self.catalog = CatalogEdits(settings.catalog_file)
        self.live = LiveListing(runtime, self.records, self.catalog, settings)
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that owns the records and the listing
        runtime.on_change(self._on_change)

    # ---- the listing, and what changes it ----------------------------------------------------

    @property
    def listing(self) -> Listing:
        return self.live.current

    async def refresh(self) -> Listing:
        self._bind_loop()
        return await self.live.refresh()

    async def wait_change(self, after: int, timeout: float) -> Listing:
        return await self.live.wait_change(after, timeout)

    async def refresh_loop(self) -> None:
        self._bind_loop()
        await self.live.refresh_loop()

    def kick(self) -> None:
        """Something changed where models run: refresh soon. Any thread."""
        self._on_loop(self.live.kick)

    def forget_ready(self, instance_id: str) -> None:
        """The instance stopped or is about to: not ready until probed again. Any thread."""
        self._on_loop(self.records.forget_ready, instance_id)

    def _on_change(self, change: Change) -> None:
        """What the runtime reports, from any thread (its event feed, the threads of its calls)."""
        if change.down and change.instance_id:
            self.forget_ready(change.instance_id)
        self.kick()

    def _bind_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    def _on_loop(self, work, *args) -> None:
        """Run ``work`` on the manager's loop. The records, the listing and their asyncio objects
        belong to that loop; a backend's blocking calls run in threads, which must hand their
        changes over rather than make them (an Event set from a thread may never wake its waiter,
        and asyncio's debug mode refuses it)."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if self._loop is None or here is self._loop:
            work(*args)  # on the loop (or before it runs: then no waiter exists yet)
        else:
            self._loop.call_soon_threadsafe(work, *args)

    def _lock(self, name: str) -> asyncio.Lock:
        self._bind_loop()
        return self.records[name].lock

    async def _instance_of(self, name: str) -> Instance | None:
        return next((i for i in await self.runtime.instances() if i.model == name), None)

    # ---- operations --------------------------------------------------------------------------

    def _judge(self, spec: ModelSpec, specs: dict[str, ModelSpec], replace: bool) -> ModelSpec | None:
        """The spec ``spec`` would replace (None: a new name); 409 when it may not."""
        current = specs.get(spec.name)
        if current is not None and current != spec and not replace:
            raise ApiError(409, f"A model named '{spec.name}' already exists with a different spec. "
                           "Remove it first, or add with replace=true.", "model_exists", "name")
        check_names_free(spec, specs)
        return current

    async def _check_runnable(self, spec: ModelSpec) -> None:
        """Its files are there and are GGUF, the node and GPUs it names exist, its image is there
        (pulled if need be): 400 otherwise."""
        try:
            await asyncio.to_thread(check_sources, spec, self.settings.models_dir)
        except SourceError as exc:
            raise ApiError(400, str(exc), "invalid_model_source", exc.param) from None
        check_where(spec, self.runtime.pools([]), self.runtime.node_names())
        await self.runtime.ensure_image(self._effective(spec))

    def _effective(self, spec: ModelSpec) -> ModelSpec:
        """The spec as its instance is made: the catalog's default image when it names none (the
        spec's own `image` wins; without a default either, the runtime's stack image)."""
        return self.catalog.effective(spec)

    # ---- the llama-server image ------------------------------------------------------------------

    def images(self) -> LlamaImages:
        defaults = self.catalog.defaults
        return LlamaImages(image=defaults.llama_image or self.runtime.stack_image,
                           previous=defaults.previous_llama_image, from_catalog=defaults.llama_image is not None)

    async def set_image(self, image: str) -> LlamaImages:
        """Make ``image`` the default of models without their own; the one it replaces is kept for a
        rollback. An image that is not there (and cannot be pulled) changes nothing (400). Running
        servers are left as they are: the upgrade moves them one at a time."""
        await self.catalog.read_or_409()
        await self.runtime.pull(image)
        now = self.images()
        if image != now.image:
            await self.catalog.set_defaults(CatalogDefaults(llama_image=image, previous_llama_image=now.image))
            log.info("llama-server image for models without their own: %s (was %s)", image, now.image)
        await self.refresh()
        return self.images()

    async def try_image(self, name: str, image: str, *, beside: bool,
                        placement: Placement | None = None) -> ModelStatus:
        """Run the model on ``image`` as a candidate instance and check it answers (/health, then a
        one-token completion); the model's own instance stays until ``promote``. ``beside=False``:
        the own instance is stopped first (no room for both), and started again if the candidate
        fails. A failure is 422 ``model_failed_on_image`` with the candidate's last log lines."""
        async with self._lock(name):
            specs = await self.catalog.read_or_409()
            if name not in specs:
                raise not_found(name, list(specs))
            trial = specs[name].model_copy(update={"image": image})
            await self.runtime.pull(image)
            await self.runtime.remove_candidate(name)  # one left by an upgrade that was cut short
            view = await self._instance_of(name)
            stopped = None
            if not beside and view is not None and view.state in STOPPABLE:
                self.forget_ready(view.id)
                self.records.begin_stop(name)
                try:
                    await self.runtime.stop(view)
                finally:
                    self.records.end_stop(name)
                stopped = view
            try:
                candidate = await self.runtime.run(trial, placement, candidate=True)
                await self._wait_ready(trial, candidate.id, new=True, mark=False)
                problem = await self.runtime.completes(await self.runtime.inspect(candidate.id))
                if problem:
                    raise ApiError(422, problem, "model_failed_on_image",
                                   log_tail=await self.runtime.log_tail(candidate, LOG_TAIL_ON_FAILURE))
            except ApiError as exc:
                found = await self.runtime.candidate(name)
                tail = exc.log_tail or (await self.runtime.log_tail(found, LOG_TAIL_ON_FAILURE) if found else [])
                await self.runtime.remove_candidate(name)
                if stopped is not None:  # back to serving on the image it had
                    self.forget_ready(stopped.id)
                    await self.runtime.start(stopped)
                    await self._wait_ready(specs[name], stopped.id, new=True, restarts_before=stopped.restart_count)
                raise ApiError(422, f"Model '{name}' does not run on {image}: {exc.message}", "model_failed_on_image",
                               "image", log_tail=tail) from None
        return await self._status(name)

    async def promote(self, name: str) -> ModelStatus:
        """The checked candidate becomes the model's instance; the old one is removed."""
        async with self._lock(name):
            candidate = await self.runtime.candidate(name)
            if candidate is None:
                raise ApiError(409, f"Model '{name}' has no candidate instance to promote.", "no_candidate", "name")
            old = await self._instance_of(name)
            if old is not None:
                self.forget_ready(old.id)
            await self.runtime.promote(name)
            self.records.mark_ready(name, candidate.id)  # checked before: it answers
            self.records[name].failure = None
            self.kick()
        return await self._status(name)

    async def discard_candidate(self, name: str) -> None:
        async with self._lock(name):
            await self.runtime.remove_candidate(name)

    async def check(self, spec: ModelSpec, *, replace: bool = False) -> AddCheck:
        """Whether ``spec`` may be added, and what it needs; writes and starts nothing (the gateway
        plans room with this before it declares the model)."""
        specs = await self.catalog.read_or_409()
        current = self._judge(spec, specs, replace)
        if current != spec:
            await self._check_runnable(spec)
        need = await asyncio.to_thread(self.live.need_of, spec)
        return AddCheck(spec=spec, unchanged=current == spec, previous=None if current == spec else current, **need)

    async def declare(self, spec: ModelSpec, *, replace: bool = False) -> tuple[ModelStatus, bool]:
        """Write ``spec`` into the catalog without starting it (it starts on its first request, or
        when the gateway loads it). An instance of the spec it replaces is removed: it must not
        keep serving the old one. Returns (status, created)."""
        async with self._lock(spec.name):
            specs = await self.catalog.read_or_409()
            current = self._judge(spec, specs, replace)
            if current == spec:
                return await self._status(spec.name), False
            await self._check_runnable(spec)
            await self.catalog.declare(spec)
            if current is not None and await self._instance_of(spec.name) is not None:
                await self.runtime.remove(spec.name)
            self.records[spec.name].failure = None
            return await self._status(spec.name), True

    async def edit(self, name: str, changes: dict) -> ModelStatus:
        """Change some fields of a declared model (``None``: back to the default), validated as an
        add is; then bring its instance in line as reconcile would. If the changed model fails to
        start, the catalog gets its old spec back and the old spec is started again."""
        async with self._lock(name):
            specs = await self.catalog.read_or_409()
            current = specs.get(name)
            if current is None:
                raise not_found(name, list(specs))
            if changes.get("name", name) != name:
                raise ApiError(400, "A model cannot be renamed by an edit: add it under the new name and remove "
                               "the old one.", "invalid_spec", "name")
            body = {**current.declared(), **changes, "name": name}
            try:
                spec = ModelSpec.model_validate({k: v for k, v in body.items() if v is not None})
            except ValidationError as exc:
                raise validation_error(exc, "Invalid model spec", "invalid_spec") from None
            if spec == current:
                return await self._status(name)
            check_names_free(spec, specs)
            await self._check_runnable(spec)
            before = await self._instance_of(name)
            was_running = before is not None and before.state in LIVE
            await self.catalog.declare(spec)
            try:
                await self._reconcile_one(spec)
            except ApiError:
                await self.catalog.declare(current)
                if was_running:  # it served before the edit: it serves its old spec again
                    await self._reconcile_one(current, wait=False, run_now=True)
                raise
            self.records[name].failure = None
        return await self._status(name)

    async def _reconcile_one(self, spec: ModelSpec, wait: bool = True, run_now: bool = False) -> None:
        """What reconcile does for one declared model: a running outdated instance is recreated, a
        stopped outdated one removed, a preloaded or pinned one (or with ``run_now``) started."""
        view = await self._instance_of(spec.name)
        decision = plan(Wanted(self.runtime.fingerprint(self._effective(spec)).spec_hash,
                               run_now=run_now or spec.preload or spec.pinned), view)
        if decision is Decision.REMOVE:
            await self.runtime.remove(spec.name)
        elif decision is Decision.START:
            self.forget_ready(view.id)
            await self.runtime.start(view)
            if wait:
                await self._wait_ready(spec, view.id, new=True, restarts_before=view.restart_count)
        elif decision in (Decision.CREATE, Decision.RECREATE):
            await self._launch(spec, None, view, wait=wait)

    async def add(self, spec: ModelSpec, *, replace: bool = False) -> tuple[ModelStatus, bool]:
        """Declare and start a model; wait until it answers. Returns (status, created).

        Adding what is already declared with the same spec is a no-op that waits for it. (This
        starts it with no regard for room; the gateway's add goes through its scheduler: check,
        declare, then a load.)"""
        async with self._lock(spec.name):
            specs = await self.catalog.read_or_409()
            current = self._judge(spec, specs, replace)
            # Only the spec the catalog already holds, running, is kept; anything else gets a new instance.
            wanted = Wanted(self.runtime.fingerprint(self._effective(spec)).spec_hash,
                            reuse=Reuse.RUNNING if current == spec else Reuse.NONE)
            view = await self._instance_of(spec.name)
            if plan(wanted, view) is Decision.KEEP:
                await self._wait_ready(spec, view.id, new=False)
                return await self._status(spec.name), False
            await self._launch(spec, None, view)  # CREATE or RECREATE
            try:
                await self.catalog.declare(spec)
            except Exception:
                await self.runtime.remove(spec.name)
                raise
            self.records[spec.name].failure = None
            return await self._status(spec.name), True

    async def remove(self, name: str) -> None:
        async with self._lock(name):
            specs = await self.catalog.read_or_409()
            view = await self._instance_of(name)
            if view is None and name not in specs:
                raise not_found(name, [m.name for m in self.listing.models])
            await self.runtime.remove(name)
            if name in specs:
                await self.catalog.undeclare(name)
            self.records[name].failure = None
        await self.refresh()

    async def restart(self, name: str) -> ModelStatus:
        async with self._lock(name):
            specs = await self.catalog.read_or_409()
            view = await self._instance_of(name)
            if view is None and name not in specs:
                raise not_found(name, [m.name for m in self.listing.models])
            # The spec is not judged: a restart bounces the server there as it is, declared or not.
            if plan(Wanted(spec_hash=None, restart=True), view) is Decision.CREATE:
                await self._launch(specs[name], None, None)
            else:  # RESTART
                self.forget_ready(view.id)
                await self.runtime.restart(view)
                spec = specs.get(name) or view.spec
                await self._wait_ready(spec, view.id, new=False)
        return await self._status(name)

    async def start(self, name: str, placement: Placement | None = None) -> ModelStatus:
        """Run a declared model and wait until it answers (the scheduler's on-demand start).

        ``placement``: the GPUs to run on; a stopped instance placed elsewhere is recreated.
        A server that ran out of GPU memory while loading is reported as ``model_out_of_memory``."""
        async with self._lock(name):
            specs = await self.catalog.read_or_409()
            if name not in specs:
                raise not_found(name, list(specs))
            spec = specs[name]
            if placement is not None and spec.gpus != "all" and not set(placement.gpus) <= set(spec.gpus):
                raise ApiError(400, f"Model '{name}' may only use GPUs {list(spec.gpus)}, not {list(placement.gpus)}.",
                               "invalid_placement", "gpus")
            made = self.runtime.fingerprint(self._effective(spec), placement)
            # A stopped instance is started again only on the GPUs asked for (its placement label).
            wanted = Wanted(made.spec_hash, placement=None if placement is None else made.placement)
            view = await self._instance_of(name)
            decision = plan(wanted, view, view.placement if needs_placement(wanted, view) else None)
            try:
                if decision is Decision.START:
                    self.forget_ready(view.id)
                    await self.runtime.start(view)
                    await self._wait_ready(spec, view.id, new=True, restarts_before=view.restart_count)
                elif decision is Decision.KEEP:  # running already, wherever it was placed
                    await self._wait_ready(spec, view.id, new=False)
                else:  # CREATE, or RECREATE (outdated, or stopped on other GPUs)
                    await self._launch(spec, placement, view)
            except ApiError as exc:
                if exc.code == "model_failed_to_start" and out_of_gpu_memory(exc.log_tail):
                    raise ApiError(503, f"Model '{name}' ran out of GPU memory while loading: {exc.message}",
                                   "model_out_of_memory", log_tail=exc.log_tail) from None
                raise
            self.records[name].failure = None
        return await self._status(name)

    async def stop(self, name: str) -> ModelStatus:
        """Stop a model's server and keep its instance, so the next start is quick."""
        async with self._lock(name):
            view = await self._instance_of(name)
            if view is None:
                specs = await self.catalog.read_or_409()
                if name not in specs:
                    raise not_found(name, [m.name for m in self.listing.models])
            elif view.state in STOPPABLE:
                self.forget_ready(view.id)
                self.records.begin_stop(name)
                try:
                    await self.runtime.stop(view)
                finally:
                    self.records.end_stop(name)
                log.info("model %s: stopped", name)
        return await self._status(name)

    async def status(self, name: str) -> ModelStatus:
        status = (await self.refresh()).find(name)
        if status is None:
            raise not_found(name, [m.name for m in self.listing.models])
        return status

    async def logs(self, name: str, tail: int, follow: bool) -> AsyncIterator[bytes]:
        view = await self._instance_of(name)
        if view is None:
            raise not_found(name, [m.name for m in self.listing.models if m.instance])
        return await self.runtime.logs(view, tail, follow)

    async def reconcile(self) -> ReconcileReport:
        """Make the runtime match the catalog: start what is preloaded or pinned (the rest start
        on demand), recreate running models whose spec changed, remove our instances nothing
        declares. A broken catalog changes nothing."""
        specs = await self.catalog.read_or_409()
        views = {i.model: i for i in await self.runtime.instances()}
        report = ReconcileReport()

        async def one(name: str) -> None:
            async with self._lock(name):
                view = await self._instance_of(name)
                spec = specs.get(name)
                # Preloaded and pinned models run now; the rest start on their first request.
                wanted = None if spec is None else Wanted(self.runtime.fingerprint(self._effective(spec)).spec_hash,
                                                          run_now=spec.preload or spec.pinned)
                decision = plan(wanted, view)
                if decision is Decision.REMOVE:
                    await self.runtime.remove(name)
                    # Declared: an outdated stopped instance went, the next start recreates it.
                    (report.removed if spec is None else report.unchanged).append(name)
                elif decision is Decision.START:
                    await self.runtime.start(view)
                    report.started.append(name)
                elif decision in (Decision.CREATE, Decision.RECREATE):
                    try:
                        check_names_free(spec, specs)
                        await self._launch(spec, None, view, wait=False)
                        self.records[name].failure = None
                        (report.started if decision is Decision.CREATE else report.recreated).append(name)
                    except ApiError as exc:
                        self.records[name].failure = exc.message
                        report.failed[name] = exc.message
                elif spec is not None:  # KEEP or NOTHING
                    report.unchanged.append(name)

        await asyncio.gather(*(one(name) for name in sorted(set(specs) | set(views))))
        await self.refresh()
        return report

    # ---- effects ---------------------------------------------------------------------------

    async def _launch(self, spec: ModelSpec, placement: Placement | None, old: Instance | None,
                      wait: bool = True) -> None:
        """Make and start an instance (replacing ``old``); on failure remove it, report its last lines."""
        try:
            await asyncio.to_thread(check_sources, spec, self.settings.models_dir)
        except SourceError as exc:
            raise ApiError(400, str(exc), "invalid_model_source", exc.param) from None
        effective = self._effective(spec)
        await self.runtime.ensure_image(effective)
        if old is None:
            instance = await self.runtime.run(effective, placement)
        else:
            instance = await self.runtime.replace(old, effective, placement)
        if wait:
            try:
                await self._wait_ready(spec, instance.id, new=True)
            except BaseException:
                await self.runtime.remove(spec.name)
                raise

    async def _wait_ready(self, spec: ModelSpec, instance_id: str, *, new: bool, restarts_before: int = 0,
                          mark: bool = True) -> None:
        """Until /health says 200; fails fast when the server exits (a bad file, no memory).
        ``mark``: remember it as the model's ready instance (not for a candidate beside it)."""
        limit = self.settings.download_timeout_s if spec.hf else self.settings.load_timeout_s
        deadline = time.monotonic() + limit
        checked = 0.0
        while True:
            now = time.monotonic()
            if now - checked >= 0.5:
                checked = now
                instance = await self.runtime.inspect(instance_id)
                if instance.state is InstanceState.EXITED or (new and instance.restart_count > restarts_before):
                    tail = await self.runtime.log_tail(instance, LOG_TAIL_ON_FAILURE)
                    raise ApiError(422, f"Model '{spec.name}' exited while loading (exit code {instance.exit_code}); "
                                   f"its last log line: {tail[-1] if tail else '(none)'}", "model_failed_to_start",
                                   log_tail=tail)
            if instance.probe_url and await self.runtime.healthy(instance):
                if mark:
                    self.records.mark_ready(instance.model, instance_id)
                    self.kick()
                return
            if now > deadline:
                tail = await self.runtime.log_tail(instance, LOG_TAIL_ON_FAILURE)
                raise ApiError(504, f"Model '{spec.name}' did not become ready within {limit:.0f} s.",
                               "model_start_timeout", log_tail=tail)
            await asyncio.sleep(0.02)  # a local GET: cheap, and readiness is seen within 20 ms

    async def _status(self, name: str) -> ModelStatus:
        return (await self.refresh()).find(name) or ModelStatus(
            name=name, declared=False, state=ModelState.STOPPED, reason="gone")
