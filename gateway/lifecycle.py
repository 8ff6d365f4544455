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
overhead after a start (gateway/calibration.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import httpx

from . import errors
from .calibration import (Estimate, OverheadStore, demand_for, estimate_of, learn_from_device, learn_from_process)
from .gpu import GpuStatus, NvmlReader
from .metrics import GatewayMetrics
from .model_metrics import crashed, eviction_reason
from .placement import Placement, index_of
from .progress import Progress, progress
from .release import memory_returned
from .scheduler import (FREEING, TICK_S, Admit, Arrive, Cancel, Finish, Phase, Policy, Reject, Released, Start, StartFailed,
                        State, Stop, Stopped, Started, Sync, Tick, next_tick, step)

log = logging.getLogger("llamadock.lifecycle")

PHASES = {"ready": Phase.READY, "starting": Phase.STARTING, "stopped": Phase.STOPPED, "failed": Phase.FAILED}
BUDGET_POOL = "budget"
LEARN_WITHIN_S = 30.0  # a start not seen in NVML by then teaches nothing
GPU_EVERY_S = 2.0  # NVML is read this often while a GPU is seen (others' use, what each model holds)
NO_GPU_EVERY_S = 30.0  # and this often while none is (a driver that comes up later is still found)
TICK_MIN_GAP_S = 0.05
TICK_FAILED_S = 1.0  # after a tick raised: a pause, so a persistent fault does not spin


@dataclass(frozen=True)
class Defaults:
    ttl_s: float = 0.0
    queue: int = 32
    queue_timeout_s: float = 120.0
    memory_budget: int | None = None  # bytes; used when there is no GPU to measure
    vram_reserve: int = 512 * 2**20  # left free on each GPU for the driver and others
    state_dir: Path | None = None  # where the learned GPU overheads are kept; None: in memory only
    release_timeout_s: float = 10.0  # longest wait for a stopped model's GPU memory to show as free
    learn_after_s: float = 1.0  # a started server's NVML reading is taken this long after it is ready
    min_residency_s: float = 0.0  # a started model is not swapped out for a rival before this long
    max_wait_s: float | None = None  # a model waiting this long for memory goes next; None: no bound


@dataclass
class _Learning:
    """A start whose NVML reading will teach the GPU's overhead."""
    placement: Placement
    estimate: Estimate
    used_before: dict[str, int | None]  # device-wide, per pool, just before the start (WSL2)
    changes: dict[str, int]  # per pool: other starts and stops seen when it began
    ready_at: float | None = None


@dataclass
class _Releasing:
    pids: tuple[int, ...]
    used_before: dict[str, int]
    held: dict[str, int] = field(default_factory=dict)


def pools_from_gpu(gpu: GpuStatus | None, defaults: Defaults, ours: dict[str, int]) -> tuple[dict, dict]:
    """(capacity, external) per pool. ``ours``: bytes our models use per pool (to tell other users apart)."""
    if gpu is not None and gpu.available and gpu.gpus:
        capacity, external = {}, {}
        for dev in gpu.gpus:
            pool = f"gpu{dev.index}"
            total, used = dev.memory.total_bytes, dev.memory.used_bytes
            if total is None:
                continue
            capacity[pool] = max(0, total - defaults.vram_reserve)
            external[pool] = max(0, (used or 0) - ours.get(pool, 0))
        if capacity:
            return capacity, external
    if defaults.memory_budget:
        return {BUDGET_POOL: defaults.memory_budget}, {}
    return {}, {}


def need_by_pool(total: int | None, pools: list[str], spec: dict) -> dict[str, int]:
    """A model's need spread over the pools it uses (llama.cpp splits layers across GPUs)."""
    if not total or not pools:
        return {}
    if pools == [BUDGET_POOL]:
        return {BUDGET_POOL: total}
    gpus = spec.get("gpus", "all")
    mine = pools if gpus == "all" else [p for p in pools if int(p[3:]) in set(gpus)] or pools[:1]
    return {pool: total // len(mine) for pool in mine}


def gpu_pools_allowed(pools: list[str], spec: dict) -> list[str]:
    """The GPU pools a model may use (its spec's ``gpus``)."""
    gpus = spec.get("gpus", "all")
    return pools if gpus == "all" else [p for p in pools if index_of(p) in set(gpus)] or \
        [f"gpu{i}" for i in gpus]  # none of them here: placement says so


def policy_from_listing(model: dict, defaults: Defaults, pools: list[str], measured: Mapping[str, int] | None,
                        overhead: Mapping[str, int] | None = None) -> Policy:
    """``measured``: bytes NVML sees it use per pool (running); ``overhead``: learned CUDA overhead per pool.
    On GPUs the model gets a Demand and is placed when it starts; ``need`` then only tells what it holds."""
    spec = model.get("spec") or {}
    ttl = spec.get("ttl")
    on_gpus = bool(pools) and pools != [BUDGET_POOL]
    demand = demand_for(model.get("need_bytes"), estimate_of(model), gpu_pools_allowed(pools, spec),
                        overhead or {}) if on_gpus else None
    return Policy(
        limit=spec.get("max_concurrent") or spec.get("parallel") or 1,
        queue=defaults.queue if spec.get("max_queue") is None else spec["max_queue"],
        ttl_s=defaults.ttl_s if ttl is None else float(ttl),
        pinned=bool(spec.get("pinned")),
        swap_group=spec.get("swap_group"),
        need=dict(measured) if measured else need_by_pool(model.get("need_bytes"), pools, spec),
        demand=demand,
        min_residency_s=defaults.min_residency_s if spec.get("min_residency") is None else float(spec["min_residency"]),
        max_wait_s=defaults.max_wait_s,
    )


class Ticket:
    """One request's place with the scheduler: wait for it, then release it when done."""

    def __init__(self, lifecycle: "Lifecycle", rid: int, model: str) -> None:
        self.lifecycle, self.rid, self.model = lifecycle, rid, model
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.since = time.monotonic()
        self.admitted_at: float | None = None
        self._released = False

    @property
    def admitted(self) -> bool:
        return self.future.done() and self.future.exception() is None

    async def wait(self) -> None:
        await asyncio.shield(self.future)

    def progress(self) -> Progress | None:
        """What it is waiting for now (None once it is not waiting)."""
        return progress(self.lifecycle.state, self.model, self.rid, self.lifecycle.clock())

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self.admitted:
            now = self.lifecycle.clock()
            took = None if self.admitted_at is None else now - self.admitted_at
            self.lifecycle.dispatch(Finish(self.rid, self.model, now, took))
        elif not self.future.done():
            self.lifecycle.dispatch(Cancel(self.rid, self.model, self.lifecycle.clock()))
            self.future.cancel()


class Lifecycle:
    def __init__(self, client: httpx.AsyncClient, orchestrator_url: str, defaults: Defaults, gpu: NvmlReader,
                 metrics: GatewayMetrics, on_status: Callable[[dict], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.url = orchestrator_url.rstrip("/")
        self.defaults = defaults
        self.gpu = gpu
        self.metrics = metrics
        self.on_status = on_status  # hands the orchestrator's fresh model status to the registry
        self.clock = clock
        self.state = State(queue_timeout_s=defaults.queue_timeout_s, release_timeout_s=defaults.release_timeout_s)
        self.overheads = OverheadStore(defaults.state_dir / "gpu-overhead.json" if defaults.state_dir else None)
        self._tickets: dict[int, Ticket] = {}
        self._rids = itertools.count(1)
        self._listing: dict = {"models": []}
        self._measured: dict[str, dict[str, int]] = {}  # model -> pool -> bytes NVML saw it use
        self._learning: dict[str, _Learning] = {}
        self._changes: dict[str, int] = {}  # pool -> starts and stops so far (a WSL2 reading is clean if unchanged)
        self._gpu: GpuStatus | None = None
        self.reading: tuple[GpuStatus, float] | None = None  # the last NVML reading, and when it was taken
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        # The background loop sleeps until a tick can matter (scheduler.next_tick) or NVML is due;
        # an event that brings that time forward wakes it.
        self._wake = asyncio.Event()
        self._wake_at = 0.0
        self._last_tick = 0.0

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

    def on_listing(self, listing: dict) -> None:
        phases = {m.name: m.phase.value for m in self.state.models.values()}
        for name in crashed(phases, listing.get("models", [])):
            self.metrics.evictions.labels(name, "crash").inc()
        self._listing = listing
        self._sync(phases_from_listing=True)

    def describe(self) -> dict:
        """The scheduler's view, for /status: what holds memory where, and what waits."""
        state = self.state
        pools = {}
        for pool, capacity in state.capacity.items():
            ours = sum(m.held.get(pool, 0) for m in state.models.values()
                       if m.phase in (Phase.STARTING, Phase.READY, Phase.STOPPING, Phase.RELEASING))
            others = state.external.get(pool, 0)
            pools[pool] = {"capacity_bytes": capacity, "models_bytes": ours, "others_bytes": others,
                           "free_bytes": max(0, capacity - ours - others)}
        listing = {m["name"]: m for m in self._listing.get("models", [])}
        uuids = self._uuids()
        for pool in pools:
            if pool in uuids:
                pools[pool].update(uuid=uuids[pool], overhead_learned_bytes=self.overheads.overhead(uuids[pool]))
        models = {}
        now = self.clock()
        for m in state.models.values():
            spec = (listing.get(m.name) or {}).get("spec") or {}
            models[m.name] = {
                "phase": m.phase.value, "in_flight": m.in_flight, "queued": len(m.queue), "limit": m.policy.limit,
                "need_bytes": dict(m.held), "pinned": m.policy.pinned, "ttl_s": m.policy.ttl_s,
                "swap_group": m.policy.swap_group, "min_residency_s": m.policy.min_residency_s,
                "yielding_to": m.yielding_to,
                # How good the estimate was: what it said, the overhead learned where it runs, what NVML sees.
                "placement": None if m.placement is None else {**m.placement.body(), "text": m.placement.describe()},
                "estimate": (listing.get(m.name) or {}).get("estimate"),
                "overhead_learned_bytes": {p: self.overheads.overhead(uuids.get(p)) for p in m.held
                                           if p in uuids} or None,
                "actual_bytes": self._measured.get(m.name),
                # For `llamadock ps`: the ttl unload counts from the last use; context and slots.
                "idle_s": round(now - m.last_used, 1) if m.phase is Phase.READY and not m.busy else None,
                "ctx_size": spec.get("ctx_size"), "parallel": spec.get("parallel"),
            }
        return {"pools": pools, "models": models}

    def dispatch(self, event) -> None:
        self.state, actions = step(self.state, event)
        for action in actions:
            self._carry_out(action)
        self._report_queues()
        if next_tick(self.state, self._last_tick) < self._wake_at:
            self._wake.set()

    # ---- effects --------------------------------------------------------------------------------

    def _carry_out(self, action) -> None:
        if isinstance(action, (Admit, Reject)):
            ticket = self._tickets.pop(action.rid, None)
            if ticket is None or ticket.future.done():
                return
            waited = self.clock() - ticket.since
            self.metrics.queue_wait.labels(action.model).observe(waited)
            if isinstance(action, Admit):
                ticket.admitted_at = self.clock()
                ticket.future.set_result(None)
            else:
                self.metrics.rejected.labels(action.model, str(action.status)).inc()
                ticket.future.set_exception(errors.GatewayError(
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
        elif isinstance(action, Stop):
            log.info("stopping %s: %s", action.model, action.reason)
            self._count_stop(action)
            model = self.state.models.get(action.model)
            held = dict(model.held) if model else {}
            self._note_change(held)
            self._spawn(self._stop(action.model, held))

    def _count_stop(self, stop: Stop) -> None:
        reason = eviction_reason(stop.reason)
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
                                                   json=placement.body() if placement else None)
        except httpx.HTTPError as exc:
            self.dispatch(StartFailed(name, f"the orchestrator did not answer ({exc})", self.clock()))
            return
        if response.status_code != 200:
            try:
                error = response.json()["error"]
                reason, code = error["message"], error.get("code")
            except (ValueError, KeyError, TypeError):
                reason, code = f"HTTP {response.status_code}", None
            self._learning.pop(name, None)
            self.dispatch(StartFailed(name, reason, self.clock(), oom=code == "model_out_of_memory"))
            return
        self.metrics.model_starts.labels(name).observe(self.clock() - started)
        if self.on_status:
            self.on_status(response.json())  # the route (URL, state) is known before the next listing
        if name in self._learning:
            self._learning[name].ready_at = self.clock()
        self.dispatch(Started(name, self.clock()))

    async def _stop(self, name: str, held: dict[str, int]) -> None:
        pids = tuple(next((m.get("pids") or () for m in self._listing.get("models", []) if m["name"] == name), ()))
        used = {f"gpu{d.index}": d.memory.used_bytes for d in (self._gpu.gpus if self._gpu else [])
                if d.memory.used_bytes is not None}
        try:
            response = await self._post_idempotent(f"{self.url}/models/{name}/stop")
            if response.status_code == 200 and self.on_status:
                self.on_status(response.json())
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
            if status.available and memory_returned(status, releasing.pids, releasing.used_before, releasing.held):
                self.dispatch(Released(name, self.clock()))
                return
            await asyncio.sleep(0.25)

    # ---- learning the CUDA overhead -------------------------------------------------------------

    def _uuids(self) -> dict[str, str]:
        return {f"gpu{d.index}": d.uuid for d in (self._gpu.gpus if self._gpu else []) if d.uuid}

    def _overheads(self) -> dict[str, int]:
        learned = {pool: self.overheads.overhead(uuid) for pool, uuid in self._uuids().items()}
        return {pool: value for pool, value in learned.items() if value is not None}

    def _note_change(self, pools) -> None:
        for pool in pools:
            self._changes[pool] = self._changes.get(pool, 0) + 1

    def _begin_learning(self, name: str, placement: Placement | None) -> None:
        listing = next((m for m in self._listing.get("models", []) if m["name"] == name), {})
        estimate = estimate_of(listing)
        if placement is None or estimate is None or self._gpu is None:
            return
        # A GPU where memory is still being returned would blur a device-wide (WSL2) reading.
        freeing = {p for m in self.state.models.values() if m.phase in FREEING and m.name != name for p in m.held}
        self._learning[name] = _Learning(
            placement, estimate,
            used_before={f"gpu{d.index}": d.memory.used_bytes for d in self._gpu.gpus},
            changes={p: -1 if p in freeing else self._changes.get(p, 0) for p in placement.pools})

    def _learn(self) -> None:
        """After a start settles, each GPU it runs on teaches its overhead (once per start)."""
        if self._gpu is None:
            return
        devices = {f"gpu{d.index}": d for d in self._gpu.gpus}
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
        """Policies and pools from the last listing and NVML. Phases from the listing only when it
        is new: replaying an older one would undo what happened since (a stop we just did)."""
        ours: dict[str, int] = {}
        if self._gpu is not None:
            for dev in self._gpu.gpus:
                pool = f"gpu{dev.index}"
                if dev.processes is None:  # WSL2: no per-process memory; count ours as the scheduler does
                    ours[pool] = sum(m.held.get(pool, 0) for m in self.state.models.values()
                                     if m.phase in (Phase.STARTING, Phase.READY, Phase.STOPPING, Phase.RELEASING))
                for model, used in (dev.models or {}).items():
                    ours[pool] = ours.get(pool, 0) + used
        capacity, external = pools_from_gpu(self._gpu, self.defaults, ours)
        pools = list(capacity)
        overheads = self._overheads()
        models = {}
        for model in self._listing.get("models", []):
            if not model.get("declared"):
                continue
            policy = policy_from_listing(model, self.defaults, pools, self._measured.get(model["name"]), overheads)
            known = self.state.models.get(model["name"])
            if phases_from_listing or known is None:
                models[model["name"]] = (policy, PHASES.get(model.get("state"), Phase.FAILED), model.get("reason"))
            else:
                models[model["name"]] = (policy, known.phase, known.reason)
        gpu_pools = frozenset(pools) if self._gpu is not None and pools != [BUDGET_POOL] else frozenset()
        self.dispatch(Sync(models, capacity, external, self.clock(), gpu_pools))

    def _read_gpu(self) -> None:
        """NVML: free memory per GPU, and what each running model really uses (once it runs)."""
        pids = {m["name"]: tuple(m.get("pids") or ()) for m in self._listing.get("models", []) if m.get("pids")}
        status = self.gpu.read(pids)
        self.reading = (status, self.clock())  # published: /gpu and /status use it rather than read again
        self._gpu = status if status.available else None
        if self._gpu is not None:
            measured: dict[str, dict[str, int]] = {}
            for dev in self._gpu.gpus:
                for model, used in (dev.models or {}).items():
                    if used:
                        measured.setdefault(model, {})[f"gpu{dev.index}"] = used
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
            gpu_due = last_gpu + (GPU_EVERY_S if self._gpu is not None else NO_GPU_EVERY_S)
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
