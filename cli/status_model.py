"""The gateway's ``GET /status`` as typed objects, for the views that read it (``llamadock ps``).

Every field has a default and unknown fields are ignored, so an older or newer gateway
still parses: what it does not say shows as unknown, not as an error.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Estimate(_Lenient):
    """The orchestrator's estimate of a model's memory (orchestrator/estimate.py)."""
    total_bytes: int = 0  # on a GPU: what one GPU holds; on a CPU host: the RAM it needs
    host_bytes: int = 0  # on a GPU host: what stays in RAM besides


class Placement(_Lenient):
    gpus: list[int] = Field(default_factory=list)
    tensor_split: list[int] | None = None
    text: str = ""


class ScheduledModel(_Lenient):
    """One model as the gateway's scheduler sees it (gateway/lifecycle.py ``describe``)."""
    phase: str = "stopped"
    in_flight: int = 0
    queued: int = 0
    limit: int = 1
    need_bytes: dict[str, int] = Field(default_factory=dict)  # per pool ("gpu0", "budget"): what it holds
    pinned: bool = False
    ttl_s: float = 0.0
    swap_group: str | None = None
    placement: Placement | None = None
    estimate: Estimate | None = None
    actual_bytes: dict[str, int] | None = None  # per GPU, what NVML sees it use
    idle_s: float | None = None  # ready and idle for this long (the ttl counts from here)
    ctx_size: int | None = None
    parallel: int | None = None


class Pool(_Lenient):
    capacity_bytes: int = 0
    models_bytes: int = 0
    others_bytes: int = 0
    free_bytes: int = 0


class Scheduler(_Lenient):
    pools: dict[str, Pool] = Field(default_factory=dict)
    models: dict[str, ScheduledModel] = Field(default_factory=dict)


class RoutedModel(_Lenient):
    id: str
    state: str = "ready"
    reason: str | None = None
    aliases: list[str] = Field(default_factory=list)


class Gpu(_Lenient):
    available: bool = False


class GatewayStatus(_Lenient):
    models: list[RoutedModel] = Field(default_factory=list)
    gpu: Gpu = Field(default_factory=Gpu)
    scheduler: Scheduler | None = None
    orchestrator_error: str | None = None

    @property
    def on_gpus(self) -> bool:
        """Models run on GPUs (else on the CPU, in RAM)."""
        if self.scheduler is not None and self.scheduler.pools:
            return any(pool.startswith("gpu") for pool in self.scheduler.pools)
        return self.gpu.available


def parse_status(raw: object) -> GatewayStatus:
    """``/status``'s JSON; raises ValueError with the reason when it is not that."""
    try:
        return GatewayStatus.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"the gateway's /status does not read as expected: {exc.errors()[0]['msg']}") from None
