"""Response models and request examples for the OpenAPI docs (/docs, /redoc); the views the CLI
reads too are in contract/status.py."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: Literal["ok", "starting"] = "ok"
    reason: str | None = Field(None, description="Why it is still starting (the model list not known yet).")


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
