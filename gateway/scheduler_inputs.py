"""What the scheduler is fed, as pure functions: memory pools from an NVML reading (or a
configured budget), each model's policy from the orchestrator's listing, the ``Sync`` event that
carries both, and the scheduler's view for ``/status``.

No I/O and no clock of their own: gateway/lifecycle.py reads NVML and the listing, calls these,
and hands the result to ``scheduler.step``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

from contract.gpu import GpuStatus
from contract.listing import Listing, ModelState, ModelStatus
from contract.status import PlacementView, PoolView, ScheduledModel, SchedulerView

from .calibration import demand_for
from .placement import index_of
from .scheduler import HOLDS_MEMORY, Phase, Policy, State, Sync

BUDGET_POOL = "budget"
PHASES = {ModelState.READY: Phase.READY, ModelState.STARTING: Phase.STARTING, ModelState.STOPPED: Phase.STOPPED,
          ModelState.FAILED: Phase.FAILED}


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


def ours_by_pool(gpu: GpuStatus | None, state: State) -> dict[str, int]:
    """Bytes our models use on each GPU: what NVML attributes to their processes, or, where it
    cannot list processes (WSL2), what the scheduler counts them to hold."""
    ours: dict[str, int] = {}
    for dev in gpu.gpus if gpu is not None else []:
        pool = f"gpu{dev.index}"
        if dev.processes is None:
            ours[pool] = sum(m.held.get(pool, 0) for m in state.models.values() if m.phase in HOLDS_MEMORY)
        for used in (dev.models or {}).values():
            ours[pool] = ours.get(pool, 0) + used
    return ours


def need_by_pool(total: int | None, pools: list[str], gpus: Literal["all"] | tuple[int, ...] = "all") -> dict[str, int]:
    """A model's need spread over the pools it uses (llama.cpp splits layers across GPUs)."""
    if not total or not pools:
        return {}
    if pools == [BUDGET_POOL]:
        return {BUDGET_POOL: total}
    mine = pools if gpus == "all" else [p for p in pools if index_of(p) in set(gpus)] or pools[:1]
    return {pool: total // len(mine) for pool in mine}


def gpu_pools_allowed(pools: list[str], gpus: Literal["all"] | tuple[int, ...]) -> list[str]:
    """The GPU pools a model may use (its spec's ``gpus``)."""
    return pools if gpus == "all" else [p for p in pools if index_of(p) in set(gpus)] or \
        [f"gpu{i}" for i in gpus]  # none of them here: placement says so


def policy_from_listing(model: ModelStatus, defaults: Defaults, pools: list[str], measured: Mapping[str, int] | None,
                        overhead: Mapping[str, int] | None = None) -> Policy:
    """``measured``: bytes NVML sees it use per pool (running); ``overhead``: learned CUDA overhead per pool.
    On GPUs the model gets a Demand and is placed when it starts; ``need`` then only tells what it holds."""
    spec = model.spec
    gpus = spec.gpus if spec else "all"
    on_gpus = bool(pools) and pools != [BUDGET_POOL]
    demand = demand_for(model.need_bytes, model.estimate, gpu_pools_allowed(pools, gpus),
                        overhead or {}) if on_gpus else None
    return Policy(
        limit=(spec.max_concurrent or spec.parallel) if spec else 1,
        queue=defaults.queue if spec is None or spec.max_queue is None else spec.max_queue,
        ttl_s=defaults.ttl_s if spec is None or spec.ttl is None else float(spec.ttl),
        pinned=bool(spec and spec.pinned),
        swap_group=spec.swap_group if spec else None,
        need=dict(measured) if measured else need_by_pool(model.need_bytes, pools, gpus),
        demand=demand,
        min_residency_s=defaults.min_residency_s if spec is None or spec.min_residency is None
        else float(spec.min_residency),
        max_wait_s=defaults.max_wait_s,
    )


def sync_event(listing: Listing, gpu: GpuStatus | None, state: State, defaults: Defaults,
               measured: Mapping[str, Mapping[str, int]], overheads: Mapping[str, int], now: float,
               phases_from_listing: bool) -> Sync:
    """Policies and pools from the listing and the NVML reading. Phases from the listing only when
    it is new: replaying an older one would undo what happened since (a stop just done)."""
    capacity, external = pools_from_gpu(gpu, defaults, ours_by_pool(gpu, state))
    pools = list(capacity)
    models = {}
    for model in listing.models:
        if not model.declared:
            continue
        policy = policy_from_listing(model, defaults, pools, measured.get(model.name), overheads)
        known = state.models.get(model.name)
        if phases_from_listing or known is None:
            models[model.name] = (policy, PHASES[model.state], model.reason)
        else:
            models[model.name] = (policy, known.phase, known.reason)
    gpu_pools = frozenset(pools) if gpu is not None and pools != [BUDGET_POOL] else frozenset()
    return Sync(models, capacity, external, now, gpu_pools)


def scheduler_view(state: State, listing: Listing, now: float, uuids: Mapping[str, str],
                   learned: Mapping[str, int | None], measured: Mapping[str, Mapping[str, int]]) -> SchedulerView:
    """What holds memory where and what waits, for /status and `llamadock ps`. ``uuids``: per GPU
    pool; ``learned``: the CUDA overhead learned per pool (None: not yet)."""
    pools = {}
    for pool, capacity in state.capacity.items():
        ours = sum(m.held.get(pool, 0) for m in state.models.values() if m.phase in HOLDS_MEMORY)
        others = state.external.get(pool, 0)
        pools[pool] = PoolView(capacity_bytes=capacity, models_bytes=ours, others_bytes=others,
                               free_bytes=max(0, capacity - ours - others), uuid=uuids.get(pool),
                               overhead_learned_bytes=learned.get(pool))
    models = {}
    for m in state.models.values():
        listed = listing.find(m.name)
        spec = listed.spec if listed else None
        models[m.name] = ScheduledModel(
            phase=m.phase.value, in_flight=m.in_flight, queued=len(m.queue), limit=m.policy.limit,
            need_bytes=dict(m.held), pinned=m.policy.pinned, ttl_s=m.policy.ttl_s,
            swap_group=m.policy.swap_group, min_residency_s=m.policy.min_residency_s, yielding_to=m.yielding_to,
            # How good the estimate was: what it said, the overhead learned where it runs, what NVML sees.
            placement=None if m.placement is None else PlacementView(**m.placement.body(),
                                                                     text=m.placement.describe()),
            estimate=listed.estimate if listed else None,
            overhead_learned_bytes={p: learned.get(p) for p in m.held if p in uuids} or None,
            actual_bytes=dict(measured[m.name]) if m.name in measured else None,
            # For `llamadock ps`: the ttl unload counts from the last use; context and slots.
            idle_s=round(now - m.last_used, 1) if m.phase is Phase.READY and not m.busy else None,
            ctx_size=spec.ctx_size if spec else None, parallel=spec.parallel if spec else None,
        )
    return SchedulerView(pools=pools, models=models)
