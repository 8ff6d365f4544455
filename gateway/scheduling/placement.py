"""Where a model runs on a box with GPUs: one GPU when it fits on one, else split by layer.

Pure: ``place(demand, room)`` picks the GPUs and the bytes each one pays. A model's
need has two parts (see orchestrator/estimate.py): the weights, KV cache and vision
projector, which llama.cpp spreads over the GPUs layer by layer (``--split-mode layer
--tensor-split a,b``), and the compute buffer plus the CUDA context, which every GPU
it uses pays in full. So splitting costs memory: it is the fallback, not the default.

* One GPU it fits on: the one with the least room left after it (best fit), so the
  larger holes stay free for larger models; ties go to the lower index.
* None: the fewest GPUs that together hold it, roomiest first, each given a share of
  the layers proportional to the room it has beyond its per-GPU cost.

Pools are keyed by ``contract.pools`` (``gpu0`` on the local node, ``n2/gpu0`` elsewhere). A
split never spans nodes: llama.cpp splits layers only across the GPUs of one process, so the
GPUs of a split are all on one node (the one that needs the fewest of them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import groupby
from typing import Mapping

from common.sizes import MiB, format_size
from contract.placement import Placement as WirePlacement
from contract.pools import LOCAL_NODE, PoolId


def order(pool: str) -> tuple[str, int]:
    """Pools in a stable order: by node, then by GPU index on it (ties in a choice go to the first)."""
    pid = PoolId.parse(pool)
    return pid.node, -1 if pid.gpu is None else pid.gpu


def node_of(pool: str) -> str:
    return PoolId.parse(pool).node


@dataclass(frozen=True)
class Demand:
    """What a model needs, before it is placed."""
    layered: int  # weights + KV cache + projector: split across GPUs by layer
    per_gpu: Mapping[str, int] = field(default_factory=dict)  # compute + CUDA overhead + margin, on each GPU used
    pools: tuple[str, ...] = ()  # the GPUs it may use (the spec's `gpus`), in pool order; or nodes' memory budgets
    absent: Mapping[str, str] = field(default_factory=dict)  # nodes it cannot run on, each with why (no file there)

    def on_one(self, pool: str) -> int:
        return self.layered + self.per_gpu.get(pool, 0)

    def plus(self, extra: int) -> "Demand":
        """Needing ``extra`` more on each GPU used (a retry after running out of memory)."""
        return Demand(self.layered, {p: self.per_gpu.get(p, 0) + extra for p in self.pools}, self.pools, self.absent)


@dataclass(frozen=True)
class Placement:
    need: Mapping[str, int]  # bytes per pool it holds
    split: tuple[int, ...] = ()  # --tensor-split, one per pool in `need` order (MiB of layers); () on one GPU

    @property
    def pools(self) -> tuple[str, ...]:
        return tuple(self.need)

    def share(self, pool: str) -> float:
        """The fraction of the split layers that ``pool`` holds."""
        if not self.split:
            return 1.0 if pool in self.need else 0.0
        total = sum(self.split)
        return self.split[self.pools.index(pool)] / total if total and pool in self.need else 0.0

    def wire(self) -> WirePlacement:
        """The wire form (``POST /models/{name}/start``): the node, its GPU indices, the split; a
        node's memory budget is the node with no GPU. Only a placement on one node has one (``place``
        makes no other)."""
        ids = [PoolId.parse(p) for p in self.pools]
        nodes = {i.node for i in ids}
        if len(ids) == 1 and ids[0].gpu is None:
            return WirePlacement(node=ids[0].node, gpus=())
        if len(nodes) != 1 or any(i.gpu is None for i in ids):
            raise ValueError(f"not a placement on the GPUs of one node: {', '.join(self.pools)}")
        return WirePlacement(node=nodes.pop(), gpus=tuple(i.gpu for i in ids), tensor_split=self.split or None)

    def describe(self) -> str:
        if not self.split:
            return " + ".join(self.pools)
        return f"{'+'.join(self.pools)} split {':'.join(str(s) for s in self.split)}"


def start_body(placement: WirePlacement) -> dict:
    """The JSON of ``POST /models/{name}/start``. The local node is left out, so an orchestrator
    from before nodes existed reads it as it always did."""
    return placement.model_dump(mode="json", exclude={"node"} if placement.node == LOCAL_NODE else None)


def place(demand: Demand, room: Mapping[str, int]) -> Placement | None:
    """The placement for ``demand`` given the free bytes per pool, or None when it fits nowhere."""
    usable = sorted((p for p in demand.pools if p in room), key=order)
    single = [p for p in usable if demand.on_one(p) <= room[p]]
    if single:
        best = min(single, key=lambda p: (room[p] - demand.on_one(p), order(p)))
        return Placement({best: demand.on_one(best)})
    # Room for layers on each GPU once it has paid its own per-GPU part.
    spare = {p: room[p] - demand.per_gpu.get(p, 0) for p in usable}
    # A split stays on one node: the one that holds it on the fewest GPUs (then the first node).
    splits = [_split_on(list(pools), spare, demand.layered) for _, pools in groupby(usable, key=node_of)]
    chosen = min((c for c in splits if c), key=len, default=None)
    if chosen is None:
        return None
    total_spare = sum(spare[p] for p in chosen)
    # Shares proportional to the spare room; never more than a GPU's spare (rounding down,
    # the remainder to the roomiest, which then still fits since the shares sum below the spares).
    shares = {p: demand.layered * spare[p] // total_spare for p in chosen}
    roomiest = max(chosen, key=lambda p: spare[p] - shares[p])
    shares[roomiest] += demand.layered - sum(shares.values())
    need = {p: shares[p] + demand.per_gpu.get(p, 0) for p in chosen}
    split = tuple(max(1, round(shares[p] / MiB)) for p in chosen)
    return Placement(need, split)


def _split_on(pools: list[str], spare: Mapping[str, int], layered: int) -> list[str] | None:
    """The fewest of one node's ``pools`` that together hold ``layered`` bytes of layers, roomiest
    first, in pool order; None when they cannot."""
    chosen: list[str] = []
    for pool in sorted(pools, key=lambda p: (-spare[p], order(p))):
        if spare[pool] <= 0 or sum(spare[p] for p in chosen) >= layered:
            break
        chosen.append(pool)
    if len(chosen) < 2 or sum(spare[p] for p in chosen) < layered:
        return None
    return sorted(chosen, key=order)


def explain(demand: Demand, room: Mapping[str, int]) -> str:
    """Why ``demand`` does not fit in ``room``, in words (for a 503): on several nodes, each node
    and what it lacks (the file, or how much memory)."""
    usable = [p for p in demand.pools if p in room]
    lacking = [f"{node}: {why}" for node, why in sorted(demand.absent.items())]
    if not usable:
        if lacking:
            return f"no node can run it ({'; '.join(lacking)})"
        return f"it may only use {', '.join(demand.pools) or 'no GPU'}, which this machine does not have"
    if all(PoolId.parse(p).gpu is None for p in usable):  # nodes' memory budgets: one node holds it all
        short = [f"{node_of(p)}: {format_size(demand.on_one(p) - room[p])} short ({format_size(max(0, room[p]))} "
                 f"free)" for p in usable]
        return f"it needs {format_size(demand.layered)} of one node's memory ({'; '.join(lacking + short)})"
    one = ", ".join(f"{p} {format_size(room[p])}" for p in usable)
    per_gpu = max(demand.per_gpu.get(p, 0) for p in usable)
    text = f"it needs {format_size(demand.on_one(usable[0]))} on one GPU"
    if len(usable) > 1:
        text += f", or {format_size(demand.layered)} split across GPUs plus {format_size(per_gpu)} on each"
    return f"{text}; at most {one} can be free for it" + (f" ({'; '.join(lacking)})" if lacking else "")
