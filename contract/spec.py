"""What a model is: the spec a user declares in config/models.yaml or adds at runtime.

Pure data and validation, no I/O. Checks that need the disk (the file exists, is
GGUF) live in ``sources.py``; turning a spec into a container lives in ``containers.py``.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from typing import Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_serializer, field_validator, model_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
# owner/repo, optionally :quant (llama-server's -hf syntax), as Hugging Face spells repo ids.
HF_PATTERN = r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$"

# Flags llama-server gets from the spec or from llamadock itself; passing them again in
# `args` would silently fight the managed value, so they are refused with a pointer.
RESERVED_FLAGS: dict[str, str] = {
    "--host": "llamadock sets it", "--port": "llamadock sets it",
    "-m": "use `model`", "--model": "use `model`",
    "-hf": "use `hf`", "-hfr": "use `hf`", "--hf-repo": "use `hf`", "--hf-file": "use `hf`",
    "-a": "use `aliases`", "--alias": "use `aliases`",
    "-c": "use `ctx_size`", "--ctx-size": "use `ctx_size`",
    "-ngl": "use `gpu_layers`", "--gpu-layers": "use `gpu_layers`", "--n-gpu-layers": "use `gpu_layers`",
    "-np": "use `parallel`", "--parallel": "use `parallel`",
    "-mm": "use `mmproj`", "--mmproj": "use `mmproj`",
    "--slot-save-path": "llamadock sets it: the model's KV cache directory",
}


def model_path_problem(path: str) -> str | None:
    """Why ``path`` may not name a file under models/, or None when it may (text only)."""
    if not path or path.strip() != path:
        return "must be a non-empty path without surrounding spaces"
    if path.startswith("/") or "\\" in path or "\x00" in path:
        return "must be relative to models/ (no leading '/', no backslashes)"
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../") or normal == ".":
        return "must stay inside models/"
    return None


class ModelSpec(BaseModel):
    """One model. Either ``model`` (a GGUF file under models/) or ``hf`` (a repo llama-server downloads)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="The id clients send as `model`: lowercase, digits, . _ -")
    model: str | None = Field(None, description="GGUF file, relative to models/ (e.g. qwen3-8b-q4_k_m.gguf).")
    hf: str | None = Field(None, description="Hugging Face repo[:quant], e.g. ggml-org/gemma-3-1b-it-GGUF:Q4_K_M.")
    aliases: tuple[str, ...] = Field((), description="Other names that route here (e.g. gpt-4o-mini).")
    ctx_size: int = Field(4096, ge=0, le=1 << 22, description="llama-server --ctx-size, shared by the slots; 0 = the model's own.")
    gpu_layers: int | Literal["all"] = Field("all", description="Layers on the GPU; 'all' or a number. Ignored without a GPU.")
    parallel: int = Field(1, ge=1, le=64, description="Requests served at once (llama-server slots).")
    mmproj: str | None = Field(None, description="Vision projector GGUF, relative to models/.")
    args: tuple[str, ...] = Field((), description="Extra llama-server arguments, e.g. ['--flash-attn', 'on'].")
    gpus: Literal["all"] | tuple[int, ...] = Field("all", description="GPUs to use: 'all' or indices like [0].")
    image: str | None = Field(None, description="llama-server image; default: the stack's image for this host.")
    node: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$",
                             description="On a swarm, the node it must run on (its hostname; `local`: the manager's); "
                             "unset: wherever the scheduler finds room.")
    # Scheduling (see gateway/scheduling/scheduler.py): none of these change the container.
    ttl: float | None = Field(None, ge=0, description="Stop after this many seconds idle; 0 = never; unset: the default.")
    pinned: bool = Field(False, description="Never stopped to make room, nor when idle.")
    preload: bool = Field(False, description="Started with the stack, not on its first request.")
    swap_group: str | None = Field(None, pattern=r"^[\w.-]{1,64}$",
                                   description="Models sharing a swap group run one at a time.")
    min_residency: float | None = Field(None, ge=0, le=86_400, description="Once started, not swapped out for a "
                                        "rival before this many seconds (unless the rival waited its max); "
                                        "unset: the default.")
    max_concurrent: int | None = Field(None, ge=1, le=1024, description="Requests at once; default `parallel`.")
    max_queue: int | None = Field(None, ge=0, le=100_000, description="Requests that may wait; default from config.")
    memory: ByteSize | None = Field(None, description="Memory it needs, e.g. '6GiB'; default: estimated from the GGUF.")

    @field_validator("model", "mmproj")
    @classmethod
    def _inside_models(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = model_path_problem(value)
        if problem:
            raise ValueError(f"{value!r} {problem}")
        return posixpath.normpath(value)

    @field_validator("hf")
    @classmethod
    def _hf_repo(cls, value: str | None) -> str | None:
        if value is not None and not re.match(HF_PATTERN, value):
            raise ValueError(f"{value!r} is not a Hugging Face repo id like owner/repo or owner/repo:Q4_K_M")
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for alias in value:
            if not alias or alias.strip() != alias or len(alias) > 200:
                raise ValueError(f"alias {alias!r} must be 1-200 characters without surrounding spaces")
        return value

    @field_validator("gpu_layers")
    @classmethod
    def _layers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 'all' or a number >= 0")
        return value

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: str | tuple[int, ...]) -> str | tuple[int, ...]:
        if isinstance(value, tuple) and (not value or any(i < 0 for i in value) or len(set(value)) != len(value)):
            raise ValueError("must be 'all' or a non-empty list of distinct GPU indices")
        return value

    @field_validator("args")
    @classmethod
    def _args(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for arg in value:
            flag = arg.split("=", 1)[0]
            if flag in RESERVED_FLAGS:
                raise ValueError(f"{flag} is managed by llamadock ({RESERVED_FLAGS[flag]})")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.model is None) == (self.hf is None):
            raise ValueError("give exactly one source: `model` (a GGUF file under models/) or `hf` (owner/repo[:quant])")
        if self.name in self.aliases:
            raise ValueError("an alias repeats the model's own name")
        return self

    def declared(self) -> dict:
        """The spec as stored in the catalog: defaults left out, so the file stays short."""
        dumped = self.model_dump(mode="json", exclude_defaults=True, exclude={"name"})
        # A field serializer defeats exclude_defaults for `memory`; every optional field defaults to None.
        return {key: value for key, value in dumped.items() if value is not None}

    @field_serializer("memory")
    def _memory_text(self, value: ByteSize | None) -> str | None:
        """Written back as people write it ("6GiB"), not as a 10-digit number."""
        if value is None:
            return None
        for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if value % size == 0:
                return f"{value // size}{unit}"
        return str(int(value))

    def digest(self) -> str:
        """A stable hash of everything that shapes the model's server (not of how it is written)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def source_from_text(text: str) -> dict[str, str]:
    """`MODEL=` on the command line: a GGUF path, or a Hugging Face repo (``hf:`` prefix optional).

    >>> source_from_text("qwen.gguf")
    {'model': 'qwen.gguf'}
    >>> source_from_text("ggml-org/gemma-3-1b-it-GGUF:Q4_K_M")
    {'hf': 'ggml-org/gemma-3-1b-it-GGUF:Q4_K_M'}
    """
    text = text.strip()
    for prefix in ("hf://", "hf:", "https://huggingface.co/"):
        if text.startswith(prefix):
            return {"hf": text[len(prefix):]}
    if text.lower().endswith(".gguf") or not re.match(HF_PATTERN, text):
        return {"model": text}
    return {"hf": text}
