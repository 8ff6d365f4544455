"""Where a model's memory lives: one identity for a pool (a node's GPU, or a node's memory
budget when it has no GPU), one formatter, and what a backend reports of each pool.

Every layer keys by ``PoolId.key`` (the scheduler's dictionaries, placement, release,
calibration, metrics labels): ``gpu0`` on the backend's only node (today's names, kept),
``<node>/gpu0`` on a node that is not the local one, ``budget`` / ``<node>/budget`` for the
memory budget of a node without a GPU. ``PoolId.parse`` reads a key back.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

LOCAL_NODE = "local"  # the one node of a single-box backend
BUDGET = "budget"  # a node's memory budget (no GPU): LLAMADOCK_MEMORY_BUDGET


class PoolId(BaseModel):
    """One pool: a GPU of a node (``gpu`` is its index there, as NVML numbers it), or the node's
    memory budget (``gpu`` is None)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node: str = LOCAL_NODE
    gpu: int | None = Field(None, ge=0)

    @property
    def key(self) -> str:
        """The one text form of a pool, used as a key everywhere."""
        own = BUDGET if self.gpu is None else f"gpu{self.gpu}"
        return own if self.node == LOCAL_NODE else f"{self.node}/{own}"

    def __str__(self) -> str:
        return self.key

    @classmethod
    def parse(cls, key: str) -> "PoolId":
        """``gpu1`` / ``node2/gpu1`` / ``budget`` / ``node2/budget`` back to a PoolId (ValueError else)."""
        node, _, own = key.rpartition("/")
        node = node or LOCAL_NODE
        if own == BUDGET:
            return cls(node=node)
        if own.startswith("gpu") and own[3:].isdigit():
            return cls(node=node, gpu=int(own[3:]))
        raise ValueError(f"not a pool: {key!r} (gpu<N>, budget, or <node>/ before either)")


def gpu_pool(index: int, node: str = LOCAL_NODE) -> str:
    """The key of GPU ``index`` on ``node``."""
    return PoolId(node=node, gpu=index).key


def budget_pool(node: str = LOCAL_NODE) -> str:
    return PoolId(node=node).key


def is_gpu(key: str) -> bool:
    """Whether the pool ``key`` names is a GPU (on any node), not a memory budget."""
    return PoolId.parse(key).gpu is not None


class Pool(BaseModel):
    """A pool as the backend reports it: what it is, how big, and which of our models run there.
    Live free memory on a GPU comes from NVML on that node (the gateway's reading); ``total_bytes``
    is what the backend knows without it (None: unknown)."""

    id: PoolId
    uuid: str | None = Field(None, description="The GPU's UUID (NVIDIA_VISIBLE_DEVICES takes it).")
    name: str | None = Field(None, description="The GPU's product name, when known.")
    total_bytes: int | None = None
    free_bytes: int | None = None
    models: list[str] = Field(default_factory=list, description="Our models placed on it now.")
    model_bytes: dict[str, int] | None = Field(None, description="Per model, the GPU bytes its server uses here, "
                                               "as another node's agent reads them (NVML); null: not known "
                                               "(no agent reading, or NVML lists no processes: WSL2).")
