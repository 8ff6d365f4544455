"""Orchestrator listings for tests, built from the contract's types: a model by name, state and
the spec fields a test cares about (the rest default, the source a GGUF named after it)."""

from __future__ import annotations

from contract.listing import HostInfo, Listing, MemoryEstimate, ModelState, ModelStatus
from contract.spec import ModelSpec


def status(name: str, state: str = "stopped", *, declared: bool = True, pids=(), need_bytes: int | None = None,
           estimate: dict | MemoryEstimate | None = None, url: str | None = None, reason: str | None = None,
           listing_version: int | None = None, **spec: object) -> ModelStatus:
    """``spec``: ModelSpec fields (``model`` defaults to ``m.gguf``)."""
    spec.setdefault("model", "m.gguf")
    made = ModelSpec(name=name, **spec)
    return ModelStatus(name=name, declared=declared, spec=made, aliases=list(made.aliases), state=ModelState(state),
                       reason=reason, url=url, pids=list(pids), need_bytes=need_bytes,
                       estimate=MemoryEstimate.model_validate(estimate) if isinstance(estimate, dict) else estimate,
                       listing_version=listing_version)


def listing(*models: ModelStatus, version: int = 1) -> Listing:
    return Listing(version=version, host=HostInfo(kind="linux"), models=list(models))
