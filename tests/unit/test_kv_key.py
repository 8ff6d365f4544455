"""What makes a saved slot fit a server (orchestrator/kv_key.py): every fact that shapes or fills
the KV cache changes the key; where the layers run does not."""

from __future__ import annotations

import pytest

from contract.spec import ModelSpec
from orchestrator.kv_key import kv_key, source_identity
from orchestrator.launch import describe_launch

SPEC = ModelSpec(name="qwen", model="qwen.gguf", ctx_size=8192, parallel=2)
SOURCE = source_identity("qwen.gguf", 4_000_000, 111, None)


def key(spec: ModelSpec = SPEC, *, image: str = "llama:cpu", source: str = SOURCE, gpu: bool = False) -> str:
    # As the listing computes it: from the spec alone, never a placement (the layer split is not in it).
    return kv_key(describe_launch(spec, gpu=gpu), image=image, source=source)


@pytest.mark.parametrize("changed", [
    {"spec": SPEC.model_copy(update={"ctx_size": 4096})},
    {"spec": SPEC.model_copy(update={"parallel": 1})},
    {"spec": SPEC.model_copy(update={"args": ("-ctk", "q8_0")})},
    {"spec": SPEC.model_copy(update={"args": ("--cache-type-v", "q4_0")})},
    {"spec": SPEC.model_copy(update={"args": ("--flash-attn", "on")})},
    {"spec": SPEC.model_copy(update={"args": ("--rope-freq-base", "500000")})},
    {"spec": SPEC.model_copy(update={"mmproj": "mm.gguf"})},
    {"source": source_identity("qwen.gguf", 4_000_001, 111, None)},  # the file replaced: another size
    {"source": source_identity("qwen.gguf", 4_000_000, 222, None)},  # or only rewritten
    {"source": source_identity("qwen-q8.gguf", 4_000_000, 111, None)},  # another quantization's file
    {"source": source_identity(None, None, None, "o/r:Q4_K_M")},
    {"image": "llama:newer"},
])
def test_whatever_shapes_or_fills_the_cache_changes_the_key(changed):
    assert key(**changed) != key()


def test_where_the_layers_run_and_what_only_schedules_do_not():
    assert key(SPEC.model_copy(update={"gpu_layers": 20}), gpu=True) == key(gpu=True) == key()
    assert key(SPEC.model_copy(update={"ttl": 60, "aliases": ("gpt-4o",), "pinned": True})) == key()
    assert len(key()) == 16
