"""Response models and request examples for the OpenAPI docs (/docs, /redoc)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .gpu import GpuStatus


class ModelObject(BaseModel):
    id: str = Field(description="The model's name; send it (or an alias) as `model`.")
    object: Literal["model"] = "model"
    created: int = Field(0, description="Unix time the gateway learned of the model.")
    owned_by: str = "llamadock"
    aliases: list[str] = Field(default_factory=list, description="Other names that route to this model.")
    state: Literal["ready", "starting", "stopped", "failed"] = Field(description="Whether it can answer now.")
    reason: str | None = Field(None, description="Why it is not ready, in words.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class Health(BaseModel):
    status: Literal["ok", "starting"] = "ok"
    reason: str | None = Field(None, description="Why it is still starting (the model list not known yet).")


class Status(BaseModel):
    models: list[ModelObject]
    gpu: GpuStatus
    upstreams_file_error: str | None = Field(None, description="Why the last edit of the static registry file was ignored.")
    scheduler: dict | None = Field(None, description="Memory pools (capacity, used by our models, by others) and per "
                                   "model: phase, requests running and waiting, memory need. Null without an orchestrator.")
    orchestrator_error: str | None = Field(None, description="Why the live model view may be stale (orchestrator away).")


_CHAT = {"model": "qwen3-8b", "messages": [{"role": "user", "content": "Say hello in five words."}]}

EXAMPLES: dict[str, dict] = {
    "chat": {
        "simple": {"summary": "One question", "value": _CHAT},
        "stream": {"summary": "Streamed (SSE)", "value": {**_CHAT, "stream": True, "max_tokens": 64}},
        "system": {
            "summary": "With a system prompt and sampling",
            "value": {
                "model": "qwen3-8b",
                "messages": [
                    {"role": "system", "content": "You answer in one sentence."},
                    {"role": "user", "content": "What is a GGUF file?"},
                ],
                "temperature": 0.7, "top_p": 0.9, "max_tokens": 128,
            },
        },
    },
    "completion": {"simple": {"summary": "Continue a prompt",
                              "value": {"model": "qwen3-8b", "prompt": "Once upon a time", "max_tokens": 32}}},
    "embeddings": {"simple": {"summary": "Embed two strings",
                              "value": {"model": "nomic-embed", "input": ["first text", "second text"]}}},
    "responses": {"simple": {"summary": "One input", "value": {"model": "qwen3-8b", "input": "Say hello."}}},
    "messages": {
        "simple": {"summary": "Anthropic style",
                   "value": {"model": "qwen3-8b", "max_tokens": 64,
                             "messages": [{"role": "user", "content": "Say hello."}]}},
    },
}
