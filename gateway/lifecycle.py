"""Carries out the scheduler's decisions: the effects around ``scheduler.step``.

Events come from requests (arrive, finish, cancel), from the orchestrator's
listing (sync), from the starts and stops it asks for, and from a clock tick
(idle unload, queue timeouts). Each goes through ``step``; each resulting action
is done here: a waiting request is let through or refused, a model is started or
stopped through the orchestrator's API. Memory pools come from NVML (per GPU,
with what each model really uses, learned once it runs) or from a configured
budget when there is no GPU.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Callable

import httpx

from . import errors
from .gpu import GpuStatus, NvmlReader
from .metrics import GatewayMetrics
from .scheduler import (Admit, Arrive, Cancel, Finish, Phase, Policy, Reject, Start, StartFailed, State, Stop,
                        Stopped, Started, Sync, Tick, step)

log = logging.getLogger("llamadock.lifecycle")

PHASES = {"ready": Phase.READY, "starting": Phase.STARTING, "stopped": Phase.STOPPED, "failed": Phase.FAILED}
BUDGET_POOL = "budget"


@dataclass(frozen=True)
class Defaults:
    ttl_s: float = 0.0
    queue: int = 32
    queue_timeout_s: float = 120.0
    memory_budget: int | None = None  # bytes; used when there is no GPU to measure
    vram_reserve: int = 512 * 2**20  # left free on each GPU for the driver and others


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


def policy_from_listing(model: dict, defaults: Defaults, pools: list[str], learned: int | None) -> Policy:
    spec = model.get("spec") or {}
    ttl = spec.get("ttl")
    return Policy(
        limit=spec.get("max_concurrent") or spec.get("parallel") or 1,
        queue=defaults.queue if spec.get("max_queue") is None else spec["max_queue"],
        ttl_s=defaults.ttl_s if ttl is None else float(ttl),
        pinned=bool(spec.get("pinned")),
        swap_group=spec.get("swap_group"),
        need=need_by_pool(learned or model.get("need_bytes"), pools, spec),
    )


class Ticket:
    """One request's place with the scheduler: wait for it, then release it when done."""

    def __init__(self, lifecycle: "Lifecycle", rid: int, model: str) -> None:
        self.lifecycle, self.rid, self.model = lifecycle, rid, model
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.since = time.monotonic()
        self._released = False

    @property
    def admitted(self) -> bool:
        return self.future.done() and self.future.exception() is None

    async def wait(self) -> None:
        await asyncio.shield(self.future)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self.admitted:
            self.lifecycle.dispatch(Finish(self.rid, self.model, self.lifecycle.clock()))
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
        self.state = State(queue_timeout_s=defaults.queue_timeout_s)
        self._tickets: dict[int, Ticket] = {}
        self._rids = itertools.count(1)
        self._listing: dict = {"models": []}
        self._learned: dict[str, int] = {}
        self._gpu: GpuStatus | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None

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
        self._listing = listing
        self._sync(phases_from_listing=True)

    def describe(self) -> dict:
        """The scheduler's view, for /status: what holds memory where, and what waits."""
        state = self.state
        pools = {}
        for pool, capacity in state.capacity.items():
            ours = sum(m.policy.need.get(pool, 0) for m in state.models.values()
                       if m.phase in (Phase.STARTING, Phase.READY, Phase.STOPPING))
            others = state.external.get(pool, 0)
            pools[pool] = {"capacity_bytes": capacity, "models_bytes": ours, "others_bytes": others,
                           "free_bytes": max(0, capacity - ours - others)}
        models = {m.name: {"phase": m.phase.value, "in_flight": m.in_flight, "queued": len(m.queue),
                           "limit": m.policy.limit, "need_bytes": dict(m.policy.need), "pinned": m.policy.pinned,
                           "ttl_s": m.policy.ttl_s, "swap_group": m.policy.swap_group}
                  for m in state.models.values()}
        return {"pools": pools, "models": models}

    def dispatch(self, event) -> None:
        self.state, actions = step(self.state, event)
        for action in actions:
            self._carry_out(action)
        self._report_queues()

    # ---- effects --------------------------------------------------------------------------------

    def _carry_out(self, action) -> None:
        if isinstance(action, (Admit, Reject)):
            ticket = self._tickets.pop(action.rid, None)
            if ticket is None or ticket.future.done():
                return
            waited = self.clock() - ticket.since
            self.metrics.queue_wait.labels(action.model).observe(waited)
            if isinstance(action, Admit):
                ticket.future.set_result(None)
            else:
                self.metrics.rejected.labels(action.model, str(action.status)).inc()
                ticket.future.set_exception(errors.GatewayError(
                    action.status, action.message,
                    type={429: "rate_limit_error", 404: "invalid_request_error"}.get(action.status, "server_error"),
                    code={429: "rate_limit_exceeded", 503: "model_unavailable", 404: "model_not_found"}[action.status],
                    headers={"retry-after": str(action.retry_after_s)} if action.retry_after_s else None))
                ticket.future.exception()  # retrieved here: a client that left must not log "never retrieved"
        elif isinstance(action, Start):
            log.info("starting %s", action.model)
            self._spawn(self._start(action.model))
        elif isinstance(action, Stop):
            log.info("stopping %s: %s", action.model, action.reason)
            self._spawn(self._stop(action.model))

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, name: str) -> None:
        started = self.clock()
        try:
            response = await self.client.post(f"{self.url}/models/{name}/start", timeout=None)
        except httpx.HTTPError as exc:
            self.dispatch(StartFailed(name, f"the orchestrator did not answer ({exc})", self.clock()))
            return
        if response.status_code != 200:
            try:
                reason = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                reason = f"HTTP {response.status_code}"
            self.dispatch(StartFailed(name, reason, self.clock()))
            return
        self.metrics.model_starts.labels(name).observe(self.clock() - started)
        if self.on_status:
            self.on_status(response.json())  # the route (URL, state) is known before the next listing
        self.dispatch(Started(name, self.clock()))

    async def _stop(self, name: str) -> None:
        try:
            response = await self.client.post(f"{self.url}/models/{name}/stop", timeout=None)
            if response.status_code == 200 and self.on_status:
                self.on_status(response.json())
        except httpx.HTTPError as exc:
            log.warning("stopping %s failed: %s", name, exc)  # the next listing tells what is true
        self.dispatch(Stopped(name, self.clock()))

    def _sync(self, phases_from_listing: bool) -> None:
        """Policies and pools from the last listing and NVML. Phases from the listing only when it
        is new: replaying an older one would undo what happened since (a stop we just did)."""
        ours: dict[str, int] = {}
        if self._gpu is not None:
            for dev in self._gpu.gpus:
                for model, used in (dev.models or {}).items():
                    ours[f"gpu{dev.index}"] = ours.get(f"gpu{dev.index}", 0) + used
        capacity, external = pools_from_gpu(self._gpu, self.defaults, ours)
        pools = list(capacity)
        models = {}
        for model in self._listing.get("models", []):
            if not model.get("declared"):
                continue
            policy = policy_from_listing(model, self.defaults, pools, self._learned.get(model["name"]))
            known = self.state.models.get(model["name"])
            if phases_from_listing or known is None:
                models[model["name"]] = (policy, PHASES.get(model.get("state"), Phase.FAILED), model.get("reason"))
            else:
                models[model["name"]] = (policy, known.phase, known.reason)
        self.dispatch(Sync(models, capacity, external, self.clock()))

    def _read_gpu(self) -> None:
        """NVML: free memory per GPU, and what each running model really uses (once it runs)."""
        pids = {m["name"]: tuple(m.get("pids") or ()) for m in self._listing.get("models", []) if m.get("pids")}
        status = self.gpu.read(pids)
        self._gpu = status if status.available else None
        if self._gpu is not None:
            learned: dict[str, int] = {}
            for dev in self._gpu.gpus:
                for model, used in (dev.models or {}).items():
                    learned[model] = learned.get(model, 0) + used
            self._learned.update({m: b for m, b in learned.items() if b})

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
        gpu_every, last_gpu = 2.0, 0.0
        while True:
            await asyncio.sleep(0.25)
            try:
                if self.clock() - last_gpu >= gpu_every:
                    last_gpu = self.clock()
                    await asyncio.to_thread(self._read_gpu)
                    self._sync(phases_from_listing=False)
                self.dispatch(Tick(self.clock()))
            except Exception:
                log.exception("scheduler tick failed")
