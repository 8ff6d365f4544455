"""What one node's agent reports of it (``NodeFacts``, its ``GET /facts``), and a node as the
orchestrator's listing shows it (``NodeView``).

The agent runs on every node of a swarm (a global service of the app image, agent/). It reads
the node's GPUs through NVML, the GGUF files in its models directory and its host kind; the
orchestrator parses its answer with ``NodeFacts.model_validate_json`` and folds it into the pools.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Fact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GpuProcessUse(_Fact):
    """One process on a GPU, with the container it runs in."""

    container_id: str | None = Field(None, description="The 64-hex Docker container id its cgroup names; null "
                                     "when it runs in no container or the host's /proc does not tell.")
    pid: int = Field(description="Its PID in the host's namespace, as NVML reports it.")
    used_bytes: int | None = Field(None, description="GPU memory it uses; null when NVML cannot tell (WSL2).")


class NodeGpu(_Fact):
    index: int = Field(ge=0, description="As NVML numbers it on that node (what NVIDIA_VISIBLE_DEVICES takes).")
    uuid: str | None = None
    name: str | None = None
    total_bytes: int | None = None
    free_bytes: int | None = None
    processes: list[GpuProcessUse] | None = Field(None, description="Null when NVML cannot list them.")


class ModelFile(_Fact):
    name: str = Field(description="Its path relative to the models directory, e.g. tiny.gguf or sub/x.gguf.")
    size_bytes: int
    mtime: float = Field(description="Its modification time (seconds since the epoch).")


class NodeFacts(_Fact):
    """``GET /facts`` of a node's agent."""

    hostname: str
    host_kind: Literal["linux", "wsl2"]
    memory_total_bytes: int | None = Field(None, description="The node's MemTotal.")
    gpus: list[NodeGpu] = Field(default_factory=list)
    nvml: str | None = Field(None, description="Null: NVML read fine. Else why it could not (no NVIDIA driver ...).")
    files: list[ModelFile] = Field(default_factory=list, description="Every *.gguf under the models directory "
                                   "(dot-directories such as .cache skipped).")
    read_at: datetime

    def has_file(self, name: str) -> bool:
        return any(f.name == name for f in self.files)


class NodeView(BaseModel):
    """A node of the swarm as the listing shows it (``Listing.nodes``; empty on one box)."""

    name: str = Field(description="As pools name it: `local` for the manager's own node, else its hostname.")
    hostname: str
    ready: bool = Field(description="Up and active: Swarm places new tasks there.")
    host_kind: str | None = Field(None, description="linux or wsl2, from its agent; null before it answered.")
    gpus: int | None = Field(None, description="GPUs its agent reads; null while its facts are unknown or stale.")
    files: int | None = Field(None, description="GGUF files in its models directory; null while unknown or stale.")
    facts_age_s: float | None = Field(None, description="Seconds since its agent last answered; null: never.")
    nvml: str | None = Field(None, description="Why its agent could not read NVML (null: it could, or unknown).")
