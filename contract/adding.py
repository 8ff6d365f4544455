"""An add as it crosses the services: the orchestrator's check of a spec before anything is
written (``AddCheck``: is it valid, what does it need), and the gateway's answer once the
scheduler made room and started it (``Added``: what it stopped for it)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .listing import MemoryEstimate, ModelStatus
from .spec import ModelSpec


class AddCheck(BaseModel):
    """``POST /models/check`` on the orchestrator: the spec is valid, its files and image are
    there, its names are free; nothing was written or started."""
    spec: ModelSpec = Field(description="The spec as validated (paths normalised).")
    unchanged: bool = Field(False, description="The catalog already declares exactly this spec.")
    previous: ModelSpec | None = Field(None, description="The spec it replaces (`replace=true`), to put back "
                                       "if the new one fails to start.")
    need_bytes: int | None = Field(None, description="Memory it needs: the spec's `memory`, else the estimate.")
    need_detail: str | None = None
    estimate: MemoryEstimate | None = None


class Added(BaseModel):
    """``POST /admin/models`` on the gateway."""
    model: ModelStatus
    created: bool = Field(description="The catalog changed (false: that spec was declared already).")
    started: bool = Field(description="It runs now (false with `start=false`: it starts on its first request).")
    stopped: list[str] = Field(default_factory=list, description="Models the scheduler stopped to make room "
                               "for it (idle ones, least recently used first, or its swap-group rivals).")
