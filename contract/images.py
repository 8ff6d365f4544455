"""The llama-server image the stack runs models on, and what an upgrade to another one did
(`make llama-upgrade`, `make llama-rollback`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .placement import Placement


class LlamaImages(BaseModel):
    """``GET/POST /llama/image`` on the orchestrator."""
    image: str = Field(description="What models without their own `image` run now.")
    previous: str | None = Field(None, description="The one before it (`make llama-rollback` returns to it).")
    from_catalog: bool = Field(False, description="Set in config/models.yaml `defaults:` (else the stack's "
                               "LLAMADOCK_LLAMA_IMAGE_CPU / _GPU).")


class ImageChange(BaseModel):
    """The body of ``POST /llama/image`` (orchestrator) and of the gateway's upgrade."""
    image: str = Field(min_length=1, pattern=r"^\S+$")


class CandidateRequest(BaseModel):
    """``POST /models/{name}/candidate``: run the model on ``image`` beside its own instance."""
    image: str = Field(min_length=1, pattern=r"^\S+$")
    beside: bool = Field(True, description="Load beside the running server (else stop it first, and start it "
                         "again if the new one fails).")
    placement: Placement | None = Field(None, description="Where the model runs now (the GPUs of its server).")


class FailedMove(BaseModel):
    name: str
    reason: str
    log_tail: list[str] = Field(default_factory=list)


class UpgradeReport(BaseModel):
    """``POST /admin/llama/upgrade`` (and ``/rollback``) on the gateway."""
    image: str
    previous: str | None = None
    moved: list[str] = Field(default_factory=list, description="Now running on the new image, checked to answer.")
    later: list[str] = Field(default_factory=list, description="Not running: their next start uses the new image.")
    own_image: list[str] = Field(default_factory=list, description="Their spec names an image: left as they are.")
    failed: list[FailedMove] = Field(default_factory=list, description="Did not run on the new image: they stay "
                                     "on the previous one (their spec now names it).")
