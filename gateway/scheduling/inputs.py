"""What the scheduler is fed, as pure functions: memory pools from an NVML reading, the pools the
orchestrator reports (or a configured budget), each model's policy from the orchestrator's
listing, the ``Sync`` event that carries both, and the scheduler's view for ``/status``.

Every pool is keyed by ``contract.pools``: ``gpu0`` on the local node (NVML's), ``n2/gpu0`` on
another node, ``budget`` for a node's memory without a GPU.

No I/O and no clock of their own: gateway/scheduling/lifecycle.py reads NVML and the listing, calls these,
and hands the result to ``scheduler.step``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Mapping, Sequence

from contract.gpu import GpuStatus
from contract.listing import InstanceState, Listing, ModelState, ModelStatus
from contract.pools import Pool, PoolId, budget_pool, gpu_pool, is_gpu
from contract.status import PlacementView, PoolView, ScheduledModel, SchedulerView

from .calibration import demand_for
from ..gpu import devices_by_pool
from .placement import Demand, Placement
from .scheduler import HOLDS_MEMORY, Phase, Policy, State, Sync

BUDGET_POOL = budget_pool()  # the configured budget of a box without a GPU
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


@dataclass(frozen=True)
class Pools:
    """What the scheduler knows of its memory: bytes it may fill, and bytes others use, per pool."""
    capacity: dict[str, int] = field(default_factory=dict)
    external: dict[str, int] = field(default_factory=dict)

    @property
    def gpus(self) -> frozenset[str]:
        """The GPU pools (release waited for, one start at a time), not a memory budget."""
        return frozenset(p for p in self.capacity if is_gpu(p))


def pools_from(gpu: GpuStatus | None, listed: Sequence[Pool], defaults: Defaults, ours: Mapping[str, int]) -> Pools:
    """The pools to schedule on: the local GPUs as NVML reads them (live), then the pools the
    orchestrator reports that NVML does not show (other nodes, or a gateway without NVML), from
    their total and free bytes; with neither, the configured budget. ``ours``: bytes our models
    use per pool (to tell other users apart). No pools listed: the NVML reading alone."""
    capacity, external = {}, {}
    if gpu is not None and gpu.available:
        for pool, dev in devices_by_pool(gpu).items():
            total, used = dev.memory.total_bytes, dev.memory.used_bytes
            if total is None:
                continue
            capacity[pool] = max(0, total - defaults.vram_reserve)
            external[pool] = max(0, (used or 0) - ours.get(pool, 0))
    for reported in listed:
        pool = reported.id.key
        if pool in capacity or reported.total_bytes is None:
            continue
        reserve = defaults.vram_reserve if reported.id.gpu is not None else 0
        capacity[pool] = max(0, reported.total_bytes - reserve)
        used = 0 if reported.free_bytes is None else reported.total_bytes - reported.free_bytes
        external[pool] = max(0, used - ours.get(pool, 0))
    if capacity:
        return Pools(capacity, external)
    if defaults.memory_budget:
        return Pools({BUDGET_POOL: defaults.memory_budget})
    return Pools()


def pools_from_gpu(gpu: GpuStatus | None, defaults: Defaults, ours: dict[str, int]) -> tuple[dict, dict]:
    """(capacity, external) per pool from the NVML reading alone (or the budget)."""
    pools = pools_from(gpu, (), defaults, ours)
    return pools.capacity, pools.external


def ours_by_pool(gpu: GpuStatus | None, state: State, listed: Sequence[Pool] = ()) -> dict[str, int]:
    """Bytes our models use on each GPU: what NVML attributes to their processes, or, where it
    cannot list processes (WSL2) or does not see the pool (another node's), what the scheduler
    counts them to hold."""
    def counted(pool: str) -> int:
        return sum(m.held.get(pool, 0) for m in state.models.values() if m.phase in HOLDS_MEMORY)

    ours: dict[str, int] = {}
    seen = devices_by_pool(gpu)
    for pool, dev in seen.items():
        if dev.processes is None:
            ours[pool] = counted(pool)
        for used in (dev.models or {}).values():
            ours[pool] = ours.get(pool, 0) + used
    for reported in listed:
        if reported.id.key not in seen:
            ours[reported.id.key] = counted(reported.id.key)
    return ours


def need_by_pool(total: int | None, pools: list[str], gpus: Literal["all"] | tuple[int, ...] = "all") -> dict[str, int]:
    """A model's need spread over the pools it uses (llama.cpp splits layers across GPUs); without
    a GPU, all of it in a memory budget (the first: it runs on one node)."""
    if not total or not pools:
        return {}
    on_gpus = [p for p in pools if is_gpu(p)]
    if not on_gpus:
        return {pools[0]: total}
    mine = on_gpus if gpus == "all" else _with_index(on_gpus, gpus) or on_gpus[:1]
    return {pool: total // len(mine) for pool in mine}


def gpu_pools_allowed(pools: list[str], gpus: Literal["all"] | tuple[int, ...]) -> list[str]:
    """The GPU pools a model may use (its spec's ``gpus``: these indices, on whichever node); never
    a node's memory budget."""
    on_gpus = [p for p in pools if is_gpu(p)]
    return on_gpus if gpus == "all" else _with_index(on_gpus, gpus) or \
        [gpu_pool(i) for i in gpus]  # none of them here: placement says so


def _with_index(pools: list[str], gpus: tuple[int, ...]) -> list[str]:
    return [p for p in pools if PoolId.parse(p).gpu in set(gpus)]


def lost_with_node(before: Mapping[str, Phase], models: Sequence[ModelStatus]) -> list[ModelStatus]:
    """Models that were ready (``before``: the scheduler's phases) and whose server the listing now
    shows lost with its node: they are to be placed again."""
    return [m for m in models if m.declared and before.get(m.name) is Phase.READY and m.instance is not None
            and m.instance.state is InstanceState.LOST]


def running_on(listed: Sequence[Pool]) -> dict[str, list[str]]:
    """Per model, the pools the orchestrator reports it running on."""
    where: dict[str, list[str]] = {}
    for pool in listed:
        for name in pool.models:
            where.setdefault(name, []).append(pool.id.key)
    return where


def policy_from_listing(model: ModelStatus, defaults: Defaults, pools: list[str], measured: Mapping[str, int] | None,
                        overhead: Mapping[str, int] | None = None, runs_on: list[str] | None = None) -> Policy:
    """``measured``: bytes NVML sees it use per pool (running); ``overhead``: learned CUDA overhead per pool;
    ``runs_on``: the pools the orchestrator reports it running on (its need is counted there until NVML
    or a placement says more). On GPUs the model gets a Demand and is placed when it starts; ``need``
    then only tells what it holds."""
    spec = model.spec
    gpus = spec.gpus if spec else "all"
    demand = demand_of(model, pools, gpus, overhead or {})
    return Policy(
        limit=(spec.max_concurrent or spec.parallel) if spec else 1,
        queue=defaults.queue if spec is None or spec.max_queue is None else spec.max_queue,
        ttl_s=defaults.ttl_s if spec is None or spec.ttl is None else float(spec.ttl),
        pinned=bool(spec and spec.pinned),
        swap_group=spec.swap_group if spec else None,
        need=dict(measured) if measured else need_by_pool(model.need_bytes, runs_on or pools, gpus),
        demand=demand,
        min_residency_s=defaults.min_residency_s if spec is None or spec.min_residency is None
        else float(spec.min_residency),
        max_wait_s=defaults.max_wait_s,
    )


def demand_of(model: ModelStatus, pools: list[str], gpus: Literal["all"] | tuple[int, ...],
              overhead: Mapping[str, int]) -> Demand | None:
    """What the model asks of the scheduler before it is placed: on GPUs, its GPU demand; on the
    memory budgets of several nodes (a swarm without GPUs), its need on one of them. Never on a node
    whose models directory lacks its file (``absent_on``). None: a fixed need, where it runs."""
    absent = dict(model.absent_on)
    usable = [p for p in pools if PoolId.parse(p).node not in absent]
    if any(is_gpu(p) for p in pools):
        demand = demand_for(model.need_bytes, model.estimate, gpu_pools_allowed(usable, gpus), overhead)
        return None if demand is None else replace(demand, absent=absent)
    if model.need_bytes and (len(pools) > 1 or absent):
        return Demand(model.need_bytes, {}, tuple(usable), absent)
    return None


def sync_event(listing: Listing, gpu: GpuStatus | None, state: State, defaults: Defaults,
               measured: Mapping[str, Mapping[str, int]], overheads: Mapping[str, int], now: float,
               phases_from_listing: bool, listed_pools: Sequence[Pool] = ()) -> Sync:
    """Policies and pools from the listing, the NVML reading and the pools the orchestrator reports.
    Phases from the listing only when it is new: replaying an older one would undo what happened
    since (a stop just done)."""
    found = pools_from(gpu, listed_pools, defaults, ours_by_pool(gpu, state, listed_pools))
    pools = list(found.capacity)
    where = running_on(listed_pools)
    models = {}
    for model in listing.models:
        if not model.declared:
            continue
        runs_on = [p for p in where.get(model.name, ()) if p in found.capacity]
        policy = policy_from_listing(model, defaults, pools, measured.get(model.name), overheads, runs_on)
        known = state.models.get(model.name)
        if phases_from_listing or known is None:
            models[model.name] = (policy, PHASES[model.state], model.reason)
        else:
            models[model.name] = (policy, known.phase, known.reason)
    return Sync(models, found.capacity, found.external, now, found.gpus)


def scheduler_view(state: State, listing: Listing, now: float, uuids: Mapping[str, str],
                   learned: Mapping[str, int | None], measured: Mapping[str, Mapping[str, int]],
                   saved: Mapping[str, tuple[int, int]] | None = None) -> SchedulerView:
    """What holds memory where and what waits, for /status and `llamadock ps`. ``uuids``: per GPU
    pool; ``learned``: the CUDA overhead learned per pool (None: not yet); ``saved``: per model, the
    conversations (and bytes) its next start can restore."""
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
            placement=None if m.placement is None else _placement_view(m.placement),
            estimate=listed.estimate if listed else None,
            overhead_learned_bytes={p: learned.get(p) for p in m.held if p in uuids} or None,
            actual_bytes=dict(measured[m.name]) if m.name in measured else None,
            # For `llamadock ps`: the ttl unload counts from the last use; context and slots.
            idle_s=round(now - m.last_used, 1) if m.phase is Phase.READY and not m.busy else None,
            ctx_size=spec.ctx_size if spec else None, parallel=spec.parallel if spec else None,
            kv_saved=(saved or {}).get(m.name, (0, 0))[0], kv_saved_bytes=(saved or {}).get(m.name, (0, 0))[1],
            node=listed.instance.node if listed and listed.instance else None,
        )
    # The swarm backend's host kind is swarm-<the manager's kind> (orchestrator/backends/swarm).
    return SchedulerView(pools=pools, models=models, several_nodes=listing.host.kind.startswith("swarm-"))


def _placement_view(placement: Placement) -> PlacementView:
    wire = placement.wire()  # its node is not shown yet: PlacementView has no field for it
    return PlacementView(gpus=list(wire.gpus), tensor_split=None if wire.tensor_split is None
                         else list(wire.tensor_split), text=placement.describe())
