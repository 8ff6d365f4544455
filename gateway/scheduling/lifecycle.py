"""Carries out the scheduler's decisions: the effects around ``scheduler.step``.

Events come from requests (arrive, finish, cancel), from the orchestrator's
listing (sync), from the starts and stops it asks for, and from a clock tick
(idle unload, queue timeouts). Each goes through ``step``; each resulting action
is done here: a waiting request is let through or refused, a model is started or
stopped through the orchestrator's API. Memory pools come from NVML (per GPU,
with what each model really uses, learned once it runs) or from a configured
budget when there is no GPU.

On a GPU it also: places models (the scheduler's ``Start`` carries the GPUs, sent with the
start), polls NVML after a stop until the memory is back (``Released``), tells a start
that ran out of GPU memory apart (``StartFailed(oom=True)``), and learns each GPU's CUDA
overhead after a start (gateway/scheduling/calibration.py).

What the scheduler is fed (pools, policies, the Sync event) and the view it gives /status are
pure functions in gateway/scheduling/inputs.py; here are only the effects, on one injected clock.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx
from pydantic import ValidationError

from common.errors import ApiError
from contract.errors import ErrorDetail, error_detail
from contract.gpu import GpuStatus
from contract.listing import HostInfo, Listing, MemoryEstimate, ModelStatus
from contract.pools import Pool
from contract.status import SchedulerView

from .calibration import OverheadStore, learn_from_device, learn_from_process, uuids_by_pool
from ..gpu import NvmlReader, device_pool, devices_by_pool, with_other_nodes
from ..kvcache.keeper import KvKeeper
from ..metrics import GatewayMetrics
from ..model_metrics import crashed, eviction_reason
from .placement import Placement, start_body
from .progress import Progress, progress
from .release import memory_returned
from .scheduler import (FREEING, TICK_S, Admit, Arrive, Cancel, Finish, Phase, Policy, Reject, Released, Start,
                        StartFailed, State, Stop, Stopped, Started, Tick, next_tick, step)
from .inputs import Defaults, lost_with_node, policy_from_listing, scheduler_view, sync_event

log = logging.getLogger("llamadock.lifecycle")

LEARN_WITHIN_S = 30.0  # a start not seen in NVML by then teaches nothing
GPU_EVERY_S = 2.0  # NVML is read this often while a GPU is seen (others' use, what each model holds)
NO_GPU_EVERY_S = 30.0  # and this often while none is (a driver that comes up later is still found)
RELEASE_POLL_S = 0.25  # while a stopped model's GPU memory is not yet seen free
TICK_MIN_GAP_S = 0.05
TICK_FAILED_S = 1.0  # after a tick raised: a pause, so a persistent fault does not spin
NO_LISTING = Listing(version=-1, host=HostInfo(kind="unknown"))


@dataclass
class _Learning:
    """A start whose NVML reading will teach the GPU's overhead."""
    placement: Placement
    estimate: MemoryEstimate
    used_before: dict[str, int | None]  # device-wide, per pool, just before the start (WSL2)
    changes: dict[str, int]  # per pool: other starts and stops seen when it began
    ready_at: float | None = None


@dataclass
class _Releasing:
    pids: tuple[int, ...]
    used_before: dict[str, int]
    held: dict[str, int] = field(default_factory=dict)


class Ticket:
    """One request's place with the scheduler: wait for it, then release it when done."""

    def __init__(self, lifecycle: "Lifecycle", rid: int, model: str) -> None:
        self.lifecycle, self.rid, self.model = lifecycle, rid, model
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.since = lifecycle.clock()
        self.admitted_at: float | None = None
        self.settled_at: float | None = None  # let through or refused
        self.ready_since: float | None = None  # then: when its model last became ready (None: it was not)
        self._released = False
        # Called with why, should its model's server be lost while this request is being served (its
        # node gone): the exchange ends its answer with a 503 rather than wait on a dead connection.
        self.on_lost: Callable[[str], None] | None = None

    @property
    def admitted(self) -> bool:
        return self.future.done() and self.future.exception() is None

    async def wait(self) -> None:
        await asyncio.shield(self.future)

    def wait_span(self) -> tuple[float, float, float | None]:
        """(arrived, settled, ready_since) on the lifecycle's clock, for telling its queueing from
        its model's loading (gateway/activity.split_wait); as of now while it still waits."""
        if self.settled_at is not None:
            return self.since, self.settled_at, self.ready_since
        return self.since, self.lifecycle.clock(), self.lifecycle.ready_since(self.model)

    def progress(self) -> Progress | None:
        """What it is waiting for now (None once it is not waiting)."""
        return progress(self.lifecycle.state, self.model, self.rid, self.lifecycle.clock())

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.lifecycle._serving.pop(self.rid, None)
        if self.admitted:
            now = self.lifecycle.clock()
            took = None if self.admitted_at is None else now - self.admitted_at
            self.lifecycle.dispatch(Finish(self.rid, self.model, now, took))
        elif not self.future.done():
            self.lifecycle.dispatch(Cancel(self.rid, self.model, self.lifecycle.clock()))
            self.future.cancel()


class Lifecycle:
    def __init__(self, client: httpx.AsyncClient, orchestrator_url: str, defaults: Defaults, gpu: NvmlReader,
                 metrics: GatewayMetrics, on_status: Callable[[ModelStatus], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, keeper: KvKeeper | None = None) -> None:
        self.client = client
        self.url = orchestrator_url.rstrip("/")
        self.defaults = defaults
        self.gpu = gpu
        self.metrics = metrics
        self.on_status = on_status  # hands the orchestrator's fresh model status to the registry
        self.keeper = keeper  # saves a model's slots before its planned stop (gateway/kvcache/)
        self._heard: dict[str, ModelStatus] = {}  # the last start's or stop's own answer, per model
        self.clock = clock
        self.state = State(queue_timeout_s=defaults.queue_timeout_s, release_timeout_s=defaults.release_timeout_s)
        self.overheads = OverheadStore(defaults.state_dir / "gpu-overhead.json" if defaults.state_dir else None)
        self._tickets: dict[int, Ticket] = {}  # waiting for the scheduler's word
        self._serving: dict[int, Ticket] = {}  # admitted, not yet released
        self._rids = itertools.count(1)
        self.listing = NO_LISTING  # the orchestrator's last, as the registry heard it
        self._measured: dict[str, dict[str, int]] = {}  # model -> pool -> bytes NVML saw it use
        self._learning: dict[str, _Learning] = {}
        self._changes: dict[str, int] = {}  # pool -> starts and stops so far (a WSL2 reading is clean if unchanged)
        self._gpu: GpuStatus | None = None
        # The NVML reading with other nodes' GPUs (their agents'), for measuring and learning; None: no GPU anywhere.
        self._seen: GpuStatus | None = None
        self.reading: tuple[GpuStatus, float] | None = None  # the last NVML reading, and when it was taken
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        # The background loop sleeps until a tick can matter (scheduler.next_tick) or NVML is due;
        # an event that brings that time forward wakes it.
        self._wake = asyncio.Event()
        self._wake_at = 0.0
        self._last_tick = 0.0
        # For an add's answer: whom the scheduler stopped for the models being added (an entry
        # per add under way), and why a model's last start failed.
        self.stopped_for: dict[str, list[str]] = {}
        self.start_errors: dict[str, ErrorDetail] = {}

    # ---- inputs ---------------------------------------------------------------------------------

    def knows(self, model: str) -> bool:
        return model in self.state.models

    def request(self, model: str) -> Ticket:
        """Ask to send one request to ``model``; raises the OpenAI error at once when refused outright."""
        ticket = Ticket(self, next(self._rids), model)
        self._tickets[ticket.rid] = ticket
        self.dispatch(Arrive(ticket.rid, model, self.clock()))
        if ticket.future.done() and ticket.future.exception() is not None:
            raise ticket.future.exception()
        return ticket

    def on_listing(self, listing: Listing) -> None:
        phases = {m.name: m.phase for m in self.state.models.values()}
        for name in crashed(phases, listing.models):
            self.metrics.evictions.labels(name, "crash").inc()
        self.listing = listing
        self._sync(phases_from_listing=True)
        for model in lost_with_node(phases, listing.models):
            self._place_again(model)
        if self.keeper is not None:
            unread = [m.name for m in listing.models if not self.keeper.files.is_indexed(m.name)]
            if unread:
                self._spawn(self.keeper.refresh_index(unread))  # what each model has saved, read once

    def _place_again(self, model: ModelStatus) -> None:
        """A ready model whose node was lost: what it was serving ends now (503, Retry-After), and it
        is started again wherever it fits, as a request would start it (a load; refused, it waits
        declared and says why)."""
        why = model.reason or f"its node {model.instance.node if model.instance else '?'} was lost"
        log.warning("model %s: %s; placing it again", model.name, why)
        for ticket in [t for t in self._serving.values() if t.model == model.name]:
            if ticket.on_lost is not None:
                ticket.on_lost(why)

        async def again() -> None:
            try:
                await self.load(model.name)
                log.info("model %s: placed again after its node was lost", model.name)
            except ApiError as exc:
                log.warning("model %s: not placed again: %s", model.name, exc.message)
        self._spawn(again())

    async def load(self, name: str) -> None:
        """Start ``name`` (making room as any request would) and wait until it answers: a request
        that holds nothing. The scheduler's refusal is raised as its ApiError."""
        ticket = self.request(name)
        try:
            await ticket.wait()
        finally:
            ticket.release()

    def policy_for(self, model: ModelStatus) -> Policy:
        """The policy a model not yet in the listing would get (an add's plan reads it)."""
        return policy_from_listing(model, self.defaults, list(self.state.capacity), None, self._overheads())

    def describe(self) -> SchedulerView:
        """The scheduler's view, for /status: what holds memory where, and what waits."""
        uuids = self._uuids()
        learned = {pool: self.overheads.overhead(uuid) for pool, uuid in uuids.items()}
        saved = {} if self.keeper is None else {
            m.name: self.keeper.saved(m.name, m.kv_key) for m in self.listing.models}
        return scheduler_view(self.state, self.listing, self.clock(), uuids, learned, self._measured, saved)

    def dispatch(self, event) -> None:
        self.state, actions = step(self.state, event)
        for action in actions:
            self._carry_out(action)
        self._report_queues()
        if next_tick(self.state, self._last_tick) < self._wake_at:
            self._wake.set()

    def ready_since(self, name: str) -> float | None:
        """When the model last became ready; None while it is not."""
        model = self.state.models.get(name)
        return model.ready_since if model is not None and model.phase is Phase.READY else None

    # ---- effects --------------------------------------------------------------------------------

    def _carry_out(self, action) -> None:
        if isinstance(action, (Admit, Reject)):
            ticket = self._tickets.pop(action.rid, None)
            if ticket is None or ticket.future.done():
                return
            ticket.settled_at = self.clock()
            ticket.ready_since = self.ready_since(action.model)
            waited = ticket.settled_at - ticket.since
            self.metrics.queue_wait.labels(action.model).observe(waited)
            if isinstance(action, Admit):
                ticket.admitted_at = self.clock()
                ticket.future.set_result(None)
                self._serving[ticket.rid] = ticket
            else:
                self.metrics.rejected.labels(action.model, str(action.status)).inc()
                ticket.future.set_exception(ApiError(
                    action.status, action.message,
                    type={429: "rate_limit_error", 404: "invalid_request_error"}.get(action.status, "server_error"),
                    code={429: "rate_limit_exceeded", 503: "model_unavailable", 404: "model_not_found"}[action.status],
                    headers={"retry-after": str(action.retry_after_s)} if action.retry_after_s else None,
                    extra=None if action.queue_length is None else {
                        "queue_length": action.queue_length,
                        "estimated_wait_s": None if action.estimated_wait_s is None
                        else round(action.estimated_wait_s, 1)}))
                ticket.future.exception()  # retrieved here: a client that left must not log "never retrieved"
        elif isinstance(action, Start):
            log.info("starting %s%s", action.model, f" on {action.placement.describe()}" if action.placement else "")
            self._note_change(action.placement.pools if action.placement else ())
            self._begin_learning(action.model, action.placement)
            self._spawn(self._start(action.model, action.placement))
            if self.keeper is not None and (known := self._status(action.model)) is not None:
                self._spawn(self.keeper.prepare(action.model, known.kv_key))  # its saved slots checked meanwhile
        elif isinstance(action, Stop):
            log.info("stopping %s: %s", action.model, action.reason)
            self._count_stop(action)
            if action.for_model in self.stopped_for:  # an add is listening (it made the entry)
                self.stopped_for[action.for_model].append(action.model)
            model = self.state.models.get(action.model)
            held = dict(model.held) if model else {}
            self._note_change(held)
            self._spawn(self._stop(action.model, held))

    def _count_stop(self, stop: Stop) -> None:
        reason = eviction_reason(stop.kind)
        self.metrics.evictions.labels(stop.model, reason).inc()
        if stop.swap:
            self.metrics.swaps.labels(stop.model).inc()

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_idempotent(self, url: str, json=None) -> httpx.Response:
        """A start or stop (both idempotent at the orchestrator), sent once more if the connection
        broke before an answer: a lost stop taken for done would start a rival beside it."""
        try:
            return await self.client.post(url, timeout=None, json=json)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            return await self.client.post(url, timeout=None, json=json)

    async def _start(self, name: str, placement: Placement | None = None) -> None:
        started = self.clock()
        try:
            response = await self._post_idempotent(f"{self.url}/models/{name}/start",
                                                   json=start_body(placement.wire()) if placement else None)
        except httpx.HTTPError as exc:
            self.dispatch(StartFailed(name, f"the orchestrator did not answer ({exc})", self.clock()))
            return
        if response.status_code != 200:
            error = error_detail(response.content)
            reason, code = (error.message, error.code) if error else (f"HTTP {response.status_code}", None)
            self.start_errors[name] = error or ErrorDetail(message=reason)
            self._learning.pop(name, None)
            self.dispatch(StartFailed(name, reason, self.clock(), oom=code == "model_out_of_memory"))
            return
        self.metrics.model_starts.labels(name).observe(self.clock() - started)
        self._heard_status(name, response.content)  # the route (URL, state) is known before the next listing
        if name in self._learning:
            self._learning[name].ready_at = self.clock()
        self.dispatch(Started(name, self.clock()))

    def _heard_status(self, name: str, content: bytes) -> None:
        """Hand a start's or stop's answer to the registry; one that does not parse (an orchestrator of
        another version) only waits for the next listing: the start or stop itself did happen."""
        try:
            status = ModelStatus.model_validate_json(content)
        except ValidationError as exc:
            log.warning("the orchestrator's answer for %s does not read as a model status: %s", name, exc)
            return
        self._heard[name] = status
        if self.on_status is not None:
            self.on_status(status)

    def _status(self, name: str) -> ModelStatus | None:
        """The model as last heard: the listing, or a start's answer newer than it."""
        listed, heard = self.listing.find(name), self._heard.get(name)
        if heard is not None and (listed is None or (heard.listing_version or -1) > self.listing.version):
            return heard
        return listed

    async def _stop(self, name: str, held: dict[str, int]) -> None:
        pids = tuple(listed.pids) if (listed := self.listing.find(name)) else ()
        used = {pool: d.memory.used_bytes for pool, d in devices_by_pool(self._seen).items()  # on every node
                if d.memory.used_bytes is not None}
        if self.keeper is not None and (running := self._status(name)) is not None:
            # Idle (the scheduler stops only idle models) and admitting nothing: its slots are saved
            # now, within the keeper's bound, so that its conversations survive the stop.
            await self.keeper.save(name, running.url, running.kv_key)
        try:
            response = await self._post_idempotent(f"{self.url}/models/{name}/stop")
            if response.status_code == 200:
                self._heard_status(name, response.content)
        except httpx.HTTPError as exc:
            log.warning("stopping %s failed: %s", name, exc)  # the next listing tells what is true
        self.dispatch(Stopped(name, self.clock()))
        model = self.state.models.get(name)
        if model is not None and model.phase is Phase.RELEASING:
            await self._await_release(name, _Releasing(pids, used, held))

    async def _await_release(self, name: str, releasing: _Releasing) -> None:
        """Poll NVML until the stopped model's memory is back (the scheduler bounds the wait)."""
        while (model := self.state.models.get(name)) is not None and model.phase is Phase.RELEASING:
            status = await asyncio.to_thread(self.gpu.read, {})
            if memory_returned(status, releasing.pids, releasing.used_before, releasing.held, self._listed_pools()):
                self.dispatch(Released(name, self.clock()))
                return
            await asyncio.sleep(RELEASE_POLL_S)

    # ---- learning the CUDA overhead -------------------------------------------------------------

    def _uuids(self) -> dict[str, str]:
        return uuids_by_pool(self._gpu, self._listed_pools())

    def _overheads(self) -> dict[str, int]:
        learned = {pool: self.overheads.overhead(uuid) for pool, uuid in self._uuids().items()}
        return {pool: value for pool, value in learned.items() if value is not None}

    def _note_change(self, pools) -> None:
        for pool in pools:
            self._changes[pool] = self._changes.get(pool, 0) + 1

    def _begin_learning(self, name: str, placement: Placement | None) -> None:
        estimate = listed.estimate if (listed := self.listing.find(name)) else None
        if placement is None or estimate is None or self._seen is None:
            return
        # A GPU where memory is still being returned would blur a device-wide (WSL2) reading.
        freeing = {p for m in self.state.models.values() if m.phase in FREEING and m.name != name for p in m.held}
        self._learning[name] = _Learning(
            placement, estimate,
            used_before={pool: d.memory.used_bytes for pool, d in devices_by_pool(self._seen).items()},
            changes={p: -1 if p in freeing else self._changes.get(p, 0) for p in placement.pools})

    def _learn(self) -> None:
        """After a start settles, each GPU it runs on teaches its overhead (once per start)."""
        if self._seen is None:
            return
        devices = devices_by_pool(self._seen)
        for name, pending in list(self._learning.items()):
            if pending.ready_at is None or self.clock() - pending.ready_at < self.defaults.learn_after_s:
                continue
            unseen = any(devices[p].processes is not None and not (devices[p].models or {}).get(name)
                         for p in pending.placement.pools if p in devices)
            if unseen and self.clock() - pending.ready_at < LEARN_WITHIN_S:
                continue  # its PID is not in the listing yet: the next reading
            del self._learning[name]
            for pool in pending.placement.pools:
                dev = devices.get(pool)
                if dev is None or not dev.uuid:
                    continue
                share = pending.placement.share(pool)
                if dev.processes is not None:
                    learned = learn_from_process((dev.models or {}).get(name), pending.estimate, share)
                else:
                    learned = learn_from_device(pending.used_before.get(pool), dev.memory.used_bytes,
                                                pending.estimate, share,
                                                undisturbed=pending.changes.get(pool) == self._changes.get(pool, 0))
                if learned is not None:
                    log.info("GPU %s (%s): CUDA overhead %d MiB, seen starting %s", pool, dev.uuid,
                             learned // 2**20, name)
                    self.overheads.learn(dev.uuid, learned)

    def _sync(self, phases_from_listing: bool) -> None:
        self.dispatch(sync_event(self.listing, self._gpu, self.state, self.defaults, self._measured,
                                 self._overheads(), self.clock(), phases_from_listing, self._listed_pools()))

    def _listed_pools(self) -> list[Pool]:
        """The pools the orchestrator's runtime reports beside NVML's reading (another node's, or
        sizes NVML cannot give); one without a size adds nothing to schedule on."""
        return list(self.listing.pools)

    def _read_gpu(self) -> None:
        """NVML: free memory per GPU, and what each running model really uses (once it runs)."""
        pids = {m.name: tuple(m.pids) for m in self.listing.models if m.pids}
        status = self.gpu.read(pids)
        self.reading = (status, self.clock())  # published: /gpu and /status use it rather than read again
        self._gpu = status if status.available else None
        seen = with_other_nodes(status, self._listed_pools())
        self._seen = seen if seen.available else None
        if self._seen is not None:
            measured: dict[str, dict[str, int]] = {}
            for dev in self._seen.gpus:
                for model, used in (dev.models or {}).items():
                    if used:
                        measured.setdefault(model, {})[device_pool(dev)] = used
            self._measured = measured
            self._learn()

    def recent_reading(self) -> GpuStatus | None:
        """The last NVML reading if it is no older than the loop's interval for a GPU; else None."""
        if self.reading is None or self.clock() - self.reading[1] > GPU_EVERY_S + TICK_S:
            return None
        return self.reading[0]

    def _report_queues(self) -> None:
        for model in self.state.models.values():
            self.metrics.queue_depth.labels(model.name).set(len(model.queue))

    # ---- background -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="lifecycle")

    async def stop(self) -> None:
        for task in [self._loop_task, *self._tasks]:
            if task:
                task.cancel()
        await asyncio.gather(*(t for t in [self._loop_task, *self._tasks] if t), return_exceptions=True)

    async def _loop(self) -> None:
        last_gpu = -math.inf
        while True:
            now = self.clock()
            gpu_due = last_gpu + (GPU_EVERY_S if self._seen is not None else NO_GPU_EVERY_S)  # a GPU on any node
            # (never sooner than TICK_MIN_GAP_S after the last tick: a deadline that a tick did not
            # clear must not make this loop spin)
            self._wake_at = max(min(gpu_due, next_tick(self.state, self._last_tick)), self._last_tick + TICK_MIN_GAP_S)
            self._wake.clear()
            if self._wake_at > now:
                try:
                    await asyncio.wait_for(self._wake.wait(), min(self._wake_at - now, 3600.0))
                    continue  # an event brought the next tick forward: look again
                except TimeoutError:
                    pass
            try:
                if self.clock() >= gpu_due:
                    last_gpu = self.clock()
                    await asyncio.to_thread(self._read_gpu)
                    self._sync(phases_from_listing=False)
                self._last_tick = self.clock()
                self.dispatch(Tick(self._last_tick))
            except Exception:
                log.exception("scheduler tick failed")
                await asyncio.sleep(TICK_FAILED_S)
