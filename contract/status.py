"""The gateway's own views, as the CLI and apps read them: ``/v1/models`` entries and ``/status``
(routes, GPUs and the scheduler's view of memory and queues).

Every field has a default, so a CLI of one version reads a gateway of another: what the gateway
does not say shows as unknown, not as an error (pydantic ignores fields it does not know).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .gpu import GpuStatus
from .listing import MemoryEstimate, ModelState
from .pools import PoolId


class ModelObject(BaseModel):
    """One entry of ``GET /v1/models``: OpenAI's model object, with llamadock's routing facts."""
    id: str = Field(description="The model's name; send it (or an alias) as `model`.")
    object: Literal["model"] = "model"
    created: int = Field(0, description="Unix time the gateway learned of the model.")
    owned_by: str = "llamadock"
    aliases: list[str] = Field(default_factory=list, description="Other names that route to this model.")
    state: ModelState = Field(ModelState.READY, description="Whether it can answer now.")
    reason: str | None = Field(None, description="Why it is not ready, in words.")
    provider: str | None = Field(None, description="The OpenAI-compatible server (upstreams file `providers`) "
                                 "it comes from; null: one of the stack's own models.")


class ProviderView(BaseModel):
    """One provider of ``/status``: where it is and how its last model discovery went (never its key)."""
    name: str
    url: str
    state: ModelState = ModelState.STARTING
    reason: str | None = None
    code: str | None = Field(None, description="provider_unavailable, provider_timeout, provider_auth_failed, "
                             "provider_garbage or provider_error.")
    models: int = 0


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject] = Field(default_factory=list)


class PlacementView(BaseModel):
    gpus: list[int] = Field(default_factory=list)
    tensor_split: list[int] | None = None
    text: str = ""


class ScheduledModel(BaseModel):
    """One model as the gateway's scheduler sees it."""
    phase: str = Field("stopped", description="stopped, starting, ready, stopping, releasing, failed.")
    in_flight: int = 0
    queued: int = 0
    limit: int = 1
    need_bytes: dict[str, int] = Field(default_factory=dict, description="Per pool (gpu0, budget): what it holds.")
    pinned: bool = False
    ttl_s: float = 0.0
    swap_group: str | None = None
    min_residency_s: float = 0.0
    yielding_to: str | None = None
    placement: PlacementView | None = None
    estimate: MemoryEstimate | None = None
    overhead_learned_bytes: dict[str, int | None] | None = None
    actual_bytes: dict[str, int] | None = Field(None, description="Per GPU, what NVML sees it use.")
    idle_s: float | None = Field(None, description="Ready and idle for this long (the ttl counts from here).")
    ctx_size: int | None = None
    parallel: int | None = None
    kv_saved: int = Field(0, description="Conversations whose KV cache is saved for this model's next start.")
    kv_saved_bytes: int = Field(0, description="Their size on disk.")
    node: str | None = Field(None, description="The node its server runs on (`local`: the backend's own; "
                             "null: no server).")


class PoolView(BaseModel):
    capacity_bytes: int = 0
    models_bytes: int = 0
    others_bytes: int = 0
    free_bytes: int = 0
    uuid: str | None = None
    overhead_learned_bytes: int | None = None


class SchedulerView(BaseModel):
    pools: dict[str, PoolView] = Field(default_factory=dict)
    models: dict[str, ScheduledModel] = Field(default_factory=dict)
    several_nodes: bool = Field(False, description="The backend places models on nodes (Docker Swarm): "
                                "`llamadock ps` then shows each model's node.")


class GatewayStatus(BaseModel):
    """``GET /status``: models and GPUs in one view."""
    models: list[ModelObject] = Field(default_factory=list)
    gpu: GpuStatus = Field(default_factory=lambda: GpuStatus(available=False))
    upstreams_file_error: str | None = Field(None, description="Why the last edit of the static registry file "
                                             "was ignored.")
    scheduler: SchedulerView | None = Field(None, description="Memory pools (capacity, used by our models, by "
                                            "others) and per model: phase, requests running and waiting, memory "
                                            "need. Null without an orchestrator.")
    orchestrator_error: str | None = Field(None, description="Why the live model view may be stale "
                                           "(orchestrator away).")
    providers: list[ProviderView] = Field(default_factory=list, description="OpenAI-compatible servers whose "
                                          "models are served too.")

    @property
    def on_gpus(self) -> bool:
        """Models run on GPUs (else on the CPU, in RAM)."""
        if self.scheduler is not None and self.scheduler.pools:
            return any(PoolId.parse(pool).gpu is not None for pool in self.scheduler.pools)
        return self.gpu.available


class Loaded(BaseModel):
    """``POST /admin/models/{name}/load``."""
    model: str
    state: ModelState = ModelState.READY


class Unloaded(BaseModel):
    """``POST /admin/models/{name}/unload``: ``result`` is "unloaded" or "not loaded"."""
    model: str
    result: str


class UnloadedIdle(BaseModel):
    """``POST /admin/unload``: what was stopped, and what was busy and left running."""
    unloaded: list[str] = Field(default_factory=list)
    busy: list[str] = Field(default_factory=list)
