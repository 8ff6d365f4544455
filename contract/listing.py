"""A model as it is now, as the orchestrator serves it on ``GET /models`` and in the answers of
its start, stop, add and restart; parsed once by the gateway and the CLI.

One vocabulary for a model's state (``ModelState``): the orchestrator derives it from the
instance its runtime backend reports (orchestrator/model_state.py), the gateway routes by it and
the scheduler starts from it (its own ``Phase`` adds the steps only it knows: stopping, releasing
memory). An instance (``InstanceInfo``) is described in words any backend has, not Docker's.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field, field_validator

from common.sizes import format_size

from .nodes import NodeView
from .pools import LOCAL_NODE, Pool
from .spec import ModelSpec


class ModelState(StrEnum):
    READY = "ready"  # its server answers /health
    STARTING = "starting"  # its container runs, the model is loading
    STOPPED = "stopped"  # no container running (or a stop is under way)
    FAILED = "failed"  # it exited with an error, ran out of memory, or its health check fails


class InstanceState(StrEnum):
    """Where a model's server process is, in any backend's terms (a Docker container's "dead"
    reads as exited)."""
    CREATED = "created"  # made, never started
    RUNNING = "running"
    RESTARTING = "restarting"  # exited; the backend brings it back by itself
    PAUSED = "paused"
    EXITED = "exited"
    REMOVING = "removing"
    LOST = "lost"  # its node is down or cut off: what runs there cannot be reached or stopped
    UNKNOWN = "unknown"


class InstanceInfo(BaseModel):
    """The model's server as its runtime backend runs it (a Docker container on one box)."""
    id: str = Field(description="Short instance id (a container's short id).")
    name: str
    node: str = Field(LOCAL_NODE, description="The node it runs on (`local` on a single-box backend).")
    state: InstanceState
    health: str | None = Field(None, description="The backend's own check: starting, healthy, unhealthy; "
                               "null without one.")
    image: str = ""
    started_at: str | None = Field(None, description="When it last started (ISO 8601, UTC).")
    exit_code: int = 0
    restart_count: int = 0

    @field_validator("state", mode="before")
    @classmethod
    def _unknown_state(cls, value: object) -> object:
        """A state this version does not know (a newer backend's) reads as unknown."""
        known = {s.value for s in InstanceState}
        return value if isinstance(value, InstanceState) or value in known else InstanceState.UNKNOWN


class MemoryEstimate(BaseModel):
    """Bytes a model needs, by part (orchestrator/estimate.py says how each is found).

    On a GPU: ``weights + kv_cache + mmproj`` can be split across GPUs by layer;
    ``compute + overhead`` is paid on each GPU used; ``total_bytes`` is the sum for one GPU;
    ``host_bytes`` is the RAM needed besides. On a CPU host everything is RAM: ``total_bytes`` is
    the need, ``overhead_bytes`` and ``host_bytes`` are 0.
    """
    weights_bytes: int = 0
    kv_cache_bytes: int = 0
    compute_bytes: int = 0
    mmproj_bytes: int = 0
    overhead_bytes: int = 0
    margin_bytes: int = 0
    total_bytes: int = 0
    host_bytes: int = 0

    @property
    def layered_bytes(self) -> int:
        """What llama.cpp spreads over GPUs by layer."""
        return self.weights_bytes + self.kv_cache_bytes + self.mmproj_bytes

    def describe(self) -> str:
        parts = [f"weights {format_size(self.weights_bytes)}", f"KV cache {format_size(self.kv_cache_bytes)}",
                 f"compute {format_size(self.compute_bytes)}"]
        if self.mmproj_bytes:
            parts.append(f"mmproj {format_size(self.mmproj_bytes)}")
        if self.overhead_bytes:
            parts.append(f"CUDA overhead {format_size(self.overhead_bytes)}")
        parts.append(f"margin {format_size(self.margin_bytes)}")
        text = f"{format_size(self.total_bytes)} ({' + '.join(parts)})"
        return text + (f"; {format_size(self.host_bytes)} in RAM" if self.host_bytes else "")


class ModelStatus(BaseModel):
    """One model: what is declared, what runs, and how much memory it needs."""
    name: str
    declared: bool = Field(description="In the catalog (config/models.yaml); else a leftover container.")
    spec: ModelSpec | None = Field(None, description="The declared spec, or the one its container was made from.")
    aliases: list[str] = Field(default_factory=list)
    state: ModelState
    reason: str | None = Field(None, description="Why it is not ready, in words.")
    url: str | None = Field(None, description="Where its server answers, e.g. http://llamadock-model-qwen:8080.")
    instance: InstanceInfo | None = Field(None, description="Its server's instance, when there is one.")
    pids: list[int] = Field(default_factory=list, description="Host PIDs of its server (for NVML attribution).")
    uptime_s: float | None = None
    need_bytes: int | None = Field(None, description="Memory it needs: the spec's `memory`, else the estimate.")
    need_detail: str | None = None
    estimate: MemoryEstimate | None = Field(None, description="By part; null when unknown or set in the spec.")
    kv_key: str | None = Field(None, description="What its server's saved KV caches are known by: a hash of "
                               "the weights, the cache layout, the args and the image (orchestrator/kv_key.py). "
                               "A slot file saved under another key is never restored into it.")
    absent_on: dict[str, str] = Field(default_factory=dict, description="Ready nodes this model cannot run on, each "
                                      "with why: the GGUF file (or projector) it needs is not in that node's models "
                                      "directory.")
    listing_version: int | None = Field(None, description="On a start's or stop's answer: the listing version it "
                                        "is at least as new as (an older listing must not undo it).")
    absent_on: dict[str, str] = Field(default_factory=dict, description="Ready nodes this model cannot run on, each "
                                      "with why: the GGUF file (or projector) it needs is not in that node's models "
                                      "directory.")

    @field_validator("state", mode="before")
    @classmethod
    def _unknown_state_is_failed(cls, value: object) -> object:
        """A state this version does not know (a newer orchestrator's) is never routed to."""
        known = {s.value for s in ModelState}
        return value if isinstance(value, ModelState) or value in known else ModelState.FAILED


class HostInfo(BaseModel):
    kind: str = Field(description="linux, wsl2, docker-desktop, ... (how the GPU is reached).")
    warnings: list[str] = Field(default_factory=list)


class Listing(BaseModel):
    """The orchestrator's whole view; ``version`` grows with every change (long poll: ``?after=``)."""
    version: int
    host: HostInfo
    catalog_error: str | None = Field(None, description="Why config/models.yaml could not be read.")
    available: list[str] = Field(default_factory=list, description="GGUF files under models/ not declared yet.")
    models: list[ModelStatus] = Field(default_factory=list)
    pools: list[Pool] = Field(default_factory=list, description="Where models can run, as the runtime backend "
                              "reports it: each node's GPUs (or its memory budget) and the models there.")
    nodes: list[NodeView] = Field(default_factory=list, description="The swarm's nodes with what their agents "
                                  "report (empty on one box).")

    def find(self, name: str) -> ModelStatus | None:
        return next((m for m in self.models if m.name == name), None)


class ReconcileReport(BaseModel):
    """What ``POST /reconcile`` did, model by model."""
    started: list[str] = Field(default_factory=list)
    recreated: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)
