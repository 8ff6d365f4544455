"""Memory estimates: the arithmetic by hand, the GGUF facts from real files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import gguf
import numpy as np
import pytest

from orchestrator.estimate import (
    GiB, MiB, Estimate, GgufFacts, cache_types, estimate_need, estimate_spec, kv_cells, read_gguf_facts,
)
from orchestrator.spec import ModelSpec

# Llama-3.1-8B-like: 32 layers, 32 heads of 128, 8 KV heads, 128k trained context.
LLAMA_8B = GgufFacts(arch="llama", n_layers=32, n_ctx_train=131072, n_embd=4096, n_head=32, n_head_kv=8,
                     key_length=128, value_length=128, weights_bytes=4_920_000_000)
BARE = dict(cache_k="f16", cache_v="f16", gpu_layers="all", parallel=1, overhead_bytes=0, margin=0.0)


def need(**kw) -> Estimate:
    return estimate_need(LLAMA_8B, **{**BARE, "ctx_size": 8192, **kw})


# -- the formula ------------------------------------------------------------

def test_8b_llama_at_8k_f16_has_a_1_gib_kv_cache():
    e = need()
    assert e.kv_cache_bytes == 32 * 8192 * 8 * (128 * 2 + 128 * 2) == GiB
    assert e.weights_bytes == 4_920_000_000
    assert (e.mmproj_bytes, e.overhead_bytes) == (0, 0)
    assert e.total_bytes == 4_920_000_000 + GiB


@pytest.mark.parametrize("parallel", [1, 2, 4, 8])
def test_parallel_shares_the_context_it_does_not_multiply_it(parallel):
    assert need(parallel=parallel).kv_cache_bytes == GiB


def test_quantized_caches():
    elements = 32 * 8192 * 8 * 128  # per K (and per V): 2**28
    assert need(cache_k="q8_0", cache_v="q8_0").kv_cache_bytes == elements * 2 * 34 // 32
    assert need(cache_k="q8_0", cache_v="q4_0").kv_cache_bytes == elements * (34 + 18) // 32
    assert need(cache_k="f32", cache_v="bf16").kv_cache_bytes == elements * (4 + 2)


def test_unknown_cache_type_is_named():
    with pytest.raises(ValueError, match="'q3_k'"):
        need(cache_k="q3_k")


def test_partial_offload_counts_only_the_gpu_share():
    half = need(gpu_layers=16)
    assert (half.weights_bytes, half.kv_cache_bytes) == (2_460_000_000, GiB // 2)
    none = need(gpu_layers=0)
    assert (none.weights_bytes, none.kv_cache_bytes, none.total_bytes) == (0, 0, 0)
    assert need(gpu_layers=32) == need(gpu_layers=999) == need(gpu_layers="all") == need()


def test_ctx_size_0_is_the_trained_context_per_slot():
    # llama-server's --fit (on by default) sizes --ctx-size 0 to n_ctx_train x parallel.
    assert need(ctx_size=0).kv_cache_bytes == 16 * GiB
    assert need(ctx_size=0, parallel=2).kv_cache_bytes == 32 * GiB


@pytest.mark.parametrize(("ctx", "parallel", "cells"), [
    (8192, 1, 8192), (1000, 1, 1024), (8192, 3, 3 * 2816), (4096, 64, 64 * 256), (0, 2, 2 * 131072),
])
def test_kv_cells_follow_llama_cpp_padding(ctx, parallel, cells):
    # Numbers as the vendored llama-server reports them (n_ctx_slot x n_slots).
    assert kv_cells(ctx, parallel, 131072) == cells


def test_mmproj_margin_and_overhead():
    e = need(mmproj_bytes=600 * MiB, margin=0.1, overhead_bytes=300 * MiB)
    sized = 4_920_000_000 + GiB + 600 * MiB
    assert e.mmproj_bytes == 600 * MiB
    assert e.overhead_bytes == round(sized * 0.1) + 300 * MiB
    assert e.total_bytes == sized + e.overhead_bytes
    assert e.total_bytes == e.weights_bytes + e.kv_cache_bytes + e.mmproj_bytes + e.overhead_bytes


def test_defaults_add_5_percent_and_256_mib():
    e = estimate_need(LLAMA_8B, ctx_size=8192, parallel=1, gpu_layers="all", cache_k="f16", cache_v="f16")
    assert e.total_bytes == round((4_920_000_000 + GiB) * 1.05) + 256 * MiB


def test_describe():
    e = Estimate(weights_bytes=round(4.6 * GiB), kv_cache_bytes=GiB // 2, mmproj_bytes=0,
                 overhead_bytes=round(0.3 * GiB), total_bytes=round(5.4 * GiB))
    assert e.describe() == "5.4 GiB (weights 4.6 GiB + KV cache 512 MiB + overhead 307 MiB)"
    with_mmproj = dataclasses.replace(e, mmproj_bytes=GiB)
    assert "+ mmproj 1.0 GiB +" in with_mmproj.describe()


# -- cache types from args -----------------------------------------------------

@pytest.mark.parametrize(("args", "types"), [
    ((), ("f16", "f16")),
    (("--flash-attn", "on"), ("f16", "f16")),
    (("-ctk", "q8_0"), ("q8_0", "f16")),
    (("--cache-type-k", "q8_0"), ("q8_0", "f16")),
    (("-ctv", "q4_0"), ("f16", "q4_0")),
    (("--cache-type-v", "q4_0"), ("f16", "q4_0")),
    (("--cache-type-k=q5_1", "--cache-type-v=iq4_nl"), ("q5_1", "iq4_nl")),
    (("-ctk=q8_0", "-fa", "on", "-ctv", "q8_0"), ("q8_0", "q8_0")),
    (("-ctk", "q4_0", "--cache-type-k", "q8_0"), ("q8_0", "f16")),  # the last one wins
    (("-ctk",), ("f16", "f16")),  # llama-server refuses this; not our call
])
def test_cache_types(args, types):
    assert cache_types(args) == types


# -- GGUF files ----------------------------------------------------------------

LLAMA_KEYS = {"llama.block_count": 3, "llama.context_length": 4096, "llama.embedding_length": 64,
              "llama.attention.head_count": 4}


def write_gguf(path: Path, keys: dict, tensors: dict[str, np.ndarray], **writer_kw) -> None:
    w = gguf.GGUFWriter(path, "llama", **writer_kw)
    for key, value in keys.items():
        if isinstance(value, list):
            w.add_array(key, value)
        else:
            w.add_uint32(key, value)
    for name, data in tensors.items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_facts_of_a_real_tiny_model(tiny_models):
    path = tiny_models["tiny-a"]
    facts = read_gguf_facts(path)
    assert (facts.arch, facts.n_layers, facts.n_ctx_train) == ("llama", 2, 32768)
    assert (facts.n_embd, facts.n_head, facts.n_head_kv) == (64, 4, 4)
    assert (facts.key_length, facts.value_length) == (16, 16)  # absent keys: n_embd / n_head
    size = path.stat().st_size
    assert 0.8 * size < facts.weights_bytes < size  # the rest is the 32k-token vocab


def test_defaults_and_per_layer_head_count_kv(tmp_path):
    path = tmp_path / "m.gguf"
    write_gguf(path, {**LLAMA_KEYS, "llama.attention.head_count_kv": [2, 0, 4]},
               {"w": np.zeros((8, 16), np.float16)})
    facts = read_gguf_facts(path)
    assert facts.n_head_kv == 4
    assert (facts.key_length, facts.value_length) == (16, 16)
    assert facts.weights_bytes == 8 * 16 * 2

    write_gguf(path, {**LLAMA_KEYS, "llama.attention.key_length": 192, "llama.attention.value_length": 128},
               {"w": np.zeros((8, 16), np.float16)})
    facts = read_gguf_facts(path)
    assert (facts.n_head_kv, facts.key_length, facts.value_length) == (4, 192, 128)  # no head_count_kv: n_head


@pytest.mark.parametrize("key", list(LLAMA_KEYS))
def test_missing_key_is_named(tmp_path, key):
    path = tmp_path / "m.gguf"
    write_gguf(path, {k: v for k, v in LLAMA_KEYS.items() if k != key}, {"w": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        read_gguf_facts(path)


def test_split_gguf_sums_its_parts(tmp_path):
    tensors = {f"t{i}": np.zeros((i + 1, 32), np.float32) for i in range(3)}
    write_gguf(tmp_path / "big.gguf", LLAMA_KEYS, tensors, split_max_tensors=1)
    parts = sorted(p.name for p in tmp_path.iterdir())
    assert parts == [f"big-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    expected = sum(t.nbytes for t in tensors.values())
    assert read_gguf_facts(tmp_path / parts[0]).weights_bytes == expected
    assert read_gguf_facts(tmp_path / parts[2]).n_layers == 3  # any part finds the first

    (tmp_path / parts[1]).unlink()
    with pytest.raises(ValueError, match="missing big-00002-of-00003.gguf"):
        read_gguf_facts(tmp_path / parts[0])


def test_not_a_gguf(tmp_path):
    for name, data in {"text.gguf": b"hello, not a model\n" * 10, "empty.gguf": b"", "cut.gguf": b"GGUF\x03\x00"}.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError):
            read_gguf_facts(tmp_path / name)
        assert estimate_spec(ModelSpec(name="m", model=name), tmp_path) is None


# -- specs ---------------------------------------------------------------------

def test_estimate_spec_reads_the_file_the_args_and_the_mmproj(tmp_path, tiny_models):
    (tmp_path / "tiny.gguf").symlink_to(tiny_models["tiny-a"])
    (tmp_path / "proj.gguf").write_bytes(b"\0" * 1000)
    spec = ModelSpec(name="tiny", model="tiny.gguf", mmproj="proj.gguf", ctx_size=4096, parallel=2,
                     gpu_layers=1, args=("-ctk", "q8_0", "--flash-attn", "on"))
    facts = read_gguf_facts(tmp_path / "tiny.gguf")
    expected = estimate_need(facts, ctx_size=4096, parallel=2, gpu_layers=1, cache_k="q8_0", cache_v="f16",
                             mmproj_bytes=1000)
    assert estimate_spec(spec, tmp_path) == expected
    # 1 of 2 layers x 4096 cells x 4 KV heads x (16 x 34/32 + 16 x 2) bytes
    assert expected.kv_cache_bytes == 4096 * 4 * (17 + 32)
    on_cpu = estimate_spec(spec, tmp_path, gpu_layers="all", margin=0)
    assert on_cpu.weights_bytes == facts.weights_bytes
    assert on_cpu.overhead_bytes == 256 * MiB


def test_unknown_estimates_are_none(tmp_path):
    assert estimate_spec(ModelSpec(name="m", hf="ggml-org/gemma-3-1b-it-GGUF:Q4_K_M"), tmp_path) is None
    assert estimate_spec(ModelSpec(name="m", model="absent.gguf"), tmp_path) is None
    write_gguf(tmp_path / "m.gguf", LLAMA_KEYS, {"w": np.zeros(4, np.float32)})
    assert estimate_spec(ModelSpec(name="m", model="m.gguf"), tmp_path) is not None
    assert estimate_spec(ModelSpec(name="m", model="m.gguf", mmproj="absent.gguf"), tmp_path) is None
    assert estimate_spec(ModelSpec(name="m", model="m.gguf", args=("-ctv", "q9_9")), tmp_path) is None
