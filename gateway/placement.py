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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from common.sizes import MiB, format_size


def pool_of(index: int) -> str:
    return f"gpu{index}"


def index_of(pool: str) -> int:
    return int(pool.removeprefix("gpu"))


@dataclass(frozen=True)
class Demand:
    """What a model needs, before it is placed."""
    layered: int  # weights + KV cache + projector: split across GPUs by layer
    per_gpu: Mapping[str, int] = field(default_factory=dict)  # compute + CUDA overhead + margin, on each GPU used
    pools: tuple[str, ...] = ()  # the GPUs it may use (the spec's `gpus`), in index order

    def on_one(self, pool: str) -> int:
        return self.layered + self.per_gpu.get(pool, 0)

    def plus(self, extra: int) -> "Demand":
        """Needing ``extra`` more on each GPU used (a retry after running out of memory)."""
        return Demand(self.layered, {p: self.per_gpu.get(p, 0) + extra for p in self.pools}, self.pools)


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

    def body(self) -> dict:
        """What the gateway sends with ``POST /models/{name}/start``."""
        return {"gpus": [index_of(p) for p in self.pools], "tensor_split": list(self.split) or None}

    def describe(self) -> str:
        if not self.split:
            return " + ".join(self.pools)
        return f"{'+'.join(self.pools)} split {':'.join(str(s) for s in self.split)}"


def place(demand: Demand, room: Mapping[str, int]) -> Placement | None:
    """The placement for ``demand`` given the free bytes per pool, or None when it fits nowhere."""
    usable = [p for p in demand.pools if p in room]
    single = [p for p in usable if demand.on_one(p) <= room[p]]
    if single:
        best = min(single, key=lambda p: (room[p] - demand.on_one(p), index_of(p)))
        return Placement({best: demand.on_one(best)})
    # Room for layers on each GPU once it has paid its own per-GPU part.
    spare = {p: room[p] - demand.per_gpu.get(p, 0) for p in usable}
    chosen: list[str] = []
    for pool in sorted(usable, key=lambda p: (-spare[p], index_of(p))):
        if spare[pool] <= 0 or sum(spare[p] for p in chosen) >= demand.layered:
            break
        chosen.append(pool)
    total_spare = sum(spare[p] for p in chosen)
    if len(chosen) < 2 or total_spare < demand.layered:
        return None
    chosen.sort(key=index_of)
    # Shares proportional to the spare room; never more than a GPU's spare (rounding down,
    # the remainder to the roomiest, which then still fits since the shares sum below the spares).
    shares = {p: demand.layered * spare[p] // total_spare for p in chosen}
    roomiest = max(chosen, key=lambda p: spare[p] - shares[p])
    shares[roomiest] += demand.layered - sum(shares.values())
    need = {p: shares[p] + demand.per_gpu.get(p, 0) for p in chosen}
    split = tuple(max(1, round(shares[p] / MiB)) for p in chosen)
    return Placement(need, split)


def explain(demand: Demand, room: Mapping[str, int]) -> str:
    """Why ``demand`` does not fit in ``room``, in words (for a 503)."""
    usable = [p for p in demand.pools if p in room]
    if not usable:
        return f"it may only use {', '.join(demand.pools) or 'no GPU'}, which this machine does not have"
    one = ", ".join(f"{p} {format_size(room[p])}" for p in usable)
    per_gpu = max(demand.per_gpu.get(p, 0) for p in usable)
    text = f"it needs {format_size(demand.on_one(usable[0]))} on one GPU"
    if len(usable) > 1:
        text += f", or {format_size(demand.layered)} split across GPUs plus {format_size(per_gpu)} on each"
    return f"{text}; at most {one} can be free for it"
