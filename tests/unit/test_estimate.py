"""Memory estimates: the arithmetic by hand, calibrated on real H100 figures, the GGUF facts from real files."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import gguf
import numpy as np
import pytest

from orchestrator.estimate import (
    CUDA_OVERHEAD, GiB, MiB, GgufFacts, estimate_need, estimate_spec, kv_cells, read_gguf_facts,
)
from contract.listing import MemoryEstimate
from contract.spec import ModelSpec

# Llama-3.1-8B-like: 32 layers, 32 heads of 128, 8 KV heads, 128k trained context; parts unknown.
LLAMA_8B = GgufFacts(arch="llama", n_layers=32, n_ctx_train=131072, n_embd=4096, n_head=32, n_head_kv=8,
                     key_length=128, value_length=128, weights_bytes=4_920_000_000)
BARE = dict(cache_k="f16", cache_v="f16", gpu_layers="all", parallel=1, overhead_bytes=0, margin=0.0)


def need(**kw) -> MemoryEstimate:
    return estimate_need(LLAMA_8B, **{**BARE, "ctx_size": 8192, **kw})


# -- realistic shapes, laid out as llama-quantize lays them out ----------------

SIZES = {"f16": (2, 1), "f32": (4, 1), "q4_k": (144, 256), "q6_k": (210, 256), "q8_0": (34, 32)}


def nbytes(n: int, t: str) -> int:
    num, den = SIZES[t]
    return n * num // den


def _more_bits(i: int, n: int) -> bool:  # llama-quant.cpp's use_more_bits
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def llama_facts(*, quant="f16", n_embd=2048, n_layers=16, n_head=32, n_head_kv=8, n_ff=8192, n_vocab=32000,
                n_ctx_train=32768, tied=False, n_expert=0, n_expert_used=0, n_ff_expert=0) -> GgufFacts:
    hd = n_embd // n_head
    def typ(kind, i):
        if quant == "f16":
            return "f16"
        if quant == "q8_0":
            return "q8_0"
        return "q6_k" if kind in ("v", "down") and _more_bits(i, n_layers) else "q4_k"
    blocks, biggest = [], 0
    for i in range(n_layers):
        ts = [nbytes(n_embd, "f32")] * 2
        ts += [nbytes(n_embd * n_head * hd, typ("q", i)), nbytes(n_embd * n_head_kv * hd, typ("k", i)),
               nbytes(n_embd * n_head_kv * hd, typ("v", i)), nbytes(n_embd * n_head * hd, typ("o", i))]
        if n_expert:
            ts += [nbytes(n_embd * n_expert, "f32")]
            ts += [nbytes(n_expert * n_embd * n_ff_expert, typ(k, i)) for k in ("gate", "up", "down")]
        else:
            ts += [nbytes(n_embd * n_ff, typ(k, i)) for k in ("gate", "up", "down")]
        blocks.append(sum(ts))
        biggest = max(biggest, *ts)
    embd = nbytes(n_vocab * n_embd, "f16" if quant == "f16" else "q8_0" if quant == "q8_0" else "q4_k")
    out_w = embd if tied else nbytes(n_vocab * n_embd, "f16" if quant == "f16" else "q8_0" if quant == "q8_0" else "q6_k")
    output = out_w + nbytes(n_embd, "f32")
    weights = sum(blocks) + embd + output - (out_w if tied else 0)
    return GgufFacts(arch="llama", n_layers=n_layers, n_ctx_train=n_ctx_train, n_embd=n_embd, n_head=n_head,
                     n_head_kv=n_head_kv, key_length=hd, value_length=hd, weights_bytes=weights,
                     block_bytes=tuple(blocks), output_bytes=output, tied_output=tied, token_embd_bytes=embd, other_bytes=0,
                     max_block_tensor_bytes=biggest, n_vocab=n_vocab, n_ff=0 if n_expert else n_ff,
                     n_expert=n_expert, n_expert_used=n_expert_used, n_ff_expert=n_ff_expert)


# -- the formula ------------------------------------------------------------

def test_8b_llama_at_8k_f16_has_a_1_gib_kv_cache():
    e = need()
    assert e.kv_cache_bytes == 32 * 8192 * 8 * (128 * 2 + 128 * 2) == GiB
    assert e.weights_bytes == 4_920_000_000  # parts unknown: all of it counted as blocks
    assert (e.mmproj_bytes, e.overhead_bytes, e.margin_bytes) == (0, 0, 0)
    assert e.total_bytes == 4_920_000_000 + GiB + e.compute_bytes


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


def test_partial_offload_puts_the_last_blocks_and_the_output_layer_on_the_gpu():
    # llama.cpp counts the output layer as one of --n-gpu-layers: 8 of 16 blocks
    # is 7 blocks + the output layer (the 297 MiB and 56 MiB measured on an H100).
    f = llama_facts(quant="q4_k_m")
    e = estimate_need(f, **{**BARE, "ctx_size": 4096, "gpu_layers": 8})
    assert e.weights_bytes == sum(f.block_bytes[9:]) + f.output_bytes
    assert round(e.weights_bytes / MiB) == 297
    assert e.kv_cache_bytes == 7 * 8 * MiB == 56 * MiB
    assert e.host_bytes == f.token_embd_bytes + sum(f.block_bytes[:9]) + 9 * 8 * MiB
    only_output = estimate_need(f, **{**BARE, "ctx_size": 4096, "gpu_layers": 1})
    assert (only_output.weights_bytes, only_output.kv_cache_bytes) == (f.output_bytes, 0)
    all_but_one = estimate_need(f, **{**BARE, "ctx_size": 4096, "gpu_layers": 16})
    assert all_but_one.weights_bytes == sum(f.block_bytes[1:]) + f.output_bytes


def test_full_offload_keeps_the_token_embedding_in_ram():
    f = llama_facts(quant="f16")
    full = estimate_need(f, **{**BARE, "ctx_size": 4096})
    assert full.weights_bytes == sum(f.block_bytes) + f.output_bytes == f.weights_bytes - f.token_embd_bytes
    assert full.host_bytes == f.token_embd_bytes
    assert estimate_need(f, **{**BARE, "ctx_size": 4096, "gpu_layers": 17}) == full
    assert estimate_need(f, **{**BARE, "ctx_size": 4096, "gpu_layers": 999}) == full


def test_no_gpu_layers_still_pays_the_cuda_process_and_its_compute_buffer():
    f = llama_facts(quant="q4_k_m")
    e = estimate_need(f, ctx_size=4096, parallel=1, gpu_layers=0, cache_k="f16", cache_v="f16", margin=0)
    assert (e.weights_bytes, e.kv_cache_bytes) == (0, 0)
    assert e.total_bytes == e.compute_bytes + CUDA_OVERHEAD
    assert e.host_bytes == f.weights_bytes + 16 * 8 * MiB


def test_tied_embeddings_put_a_copy_of_the_embedding_on_the_gpu():
    tied, untied = llama_facts(tied=True), llama_facts(tied=False)
    assert tied.output_bytes == tied.token_embd_bytes + 2048 * 4
    kw = {**BARE, "ctx_size": 4096}
    assert estimate_need(tied, **kw).weights_bytes == estimate_need(untied, **kw).weights_bytes


def test_cpu_device_counts_everything_in_ram_and_no_cuda_overhead():
    f = llama_facts(quant="q4_k_m")
    e = estimate_need(f, ctx_size=4096, parallel=1, gpu_layers=8, cache_k="f16", cache_v="f16", device="cpu")
    assert e.weights_bytes == f.weights_bytes  # the embedding included; gpu_layers does not matter
    assert e.kv_cache_bytes == 16 * 8 * MiB
    assert (e.overhead_bytes, e.host_bytes) == (0, 0)
    assert e.total_bytes == e.weights_bytes + e.kv_cache_bytes + e.compute_bytes + e.margin_bytes
    with pytest.raises(ValueError, match="device"):
        estimate_need(f, ctx_size=4096, parallel=1, gpu_layers=8, cache_k="f16", cache_v="f16", device="tpu")


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
    sized = 4_920_000_000 + GiB + 600 * MiB + e.compute_bytes
    assert e.mmproj_bytes == 600 * MiB
    assert e.overhead_bytes == 300 * MiB
    assert e.margin_bytes == round(sized * 0.1)
    assert e.total_bytes == sized + e.margin_bytes + e.overhead_bytes
    assert e.total_bytes == (e.weights_bytes + e.kv_cache_bytes + e.mmproj_bytes + e.compute_bytes
                             + e.overhead_bytes + e.margin_bytes)


def test_defaults_add_1_percent_and_640_mib_of_cuda_overhead():
    e = estimate_need(LLAMA_8B, ctx_size=8192, parallel=1, gpu_layers="all", cache_k="f16", cache_v="f16")
    assert CUDA_OVERHEAD == 640 * MiB == e.overhead_bytes
    assert e.total_bytes == round((4_920_000_000 + GiB + e.compute_bytes) * 1.01) + 640 * MiB


def test_describe_and_as_dict():
    e = MemoryEstimate(weights_bytes=round(4.6 * GiB), kv_cache_bytes=GiB // 2, compute_bytes=258 * MiB, mmproj_bytes=0,
                       overhead_bytes=640 * MiB, margin_bytes=56 * MiB, total_bytes=round(6.1 * GiB),
                       host_bytes=501 * MiB)
    assert e.describe() == ("6.1 GiB (weights 4.6 GiB + KV cache 512 MiB + compute 258 MiB + CUDA overhead 640 MiB"
                            " + margin 56 MiB); 501 MiB in RAM")
    with_mmproj = e.model_copy(update={"mmproj_bytes": GiB})
    assert "+ mmproj 1.0 GiB +" in with_mmproj.describe()
    on_cpu = e.model_copy(update={"overhead_bytes": 0, "host_bytes": 0})
    assert "CUDA" not in on_cpu.describe() and "RAM" not in on_cpu.describe()
    assert list(e.model_dump()) == ["weights_bytes", "kv_cache_bytes", "compute_bytes", "mmproj_bytes",
                                 "overhead_bytes", "margin_bytes", "total_bytes", "host_bytes"]
    assert all(isinstance(v, int) for v in e.model_dump().values())


# -- calibration: ../shared/GPU.md, an H100 80GB, NVML per-process figures -----------

# (quant, ctx, parallel, gpu_layers, NVML actual MiB, llama.cpp's own model/context/compute MiB or None)
H100_ROWS = [
    ("f16", 4096, 1, "all", 2762, (1981, 128, 66)),
    ("f16", 32768, 4, "all", 3662, (1981, 1024, 68)),
    ("q4_k_m", 8192, 8, "all", 1514, (608, 256, 66)),
    ("q4_k_m", 0, 2, "all", 3338, None),
    ("q4_k_m", 4096, 1, 8, 1020, (297, 56, 79)),
]


@pytest.mark.parametrize(("quant", "ctx", "parallel", "gpu_layers", "actual", "own"), H100_ROWS)
def test_never_under_and_at_most_15_percent_over_on_a_real_h100(quant, ctx, parallel, gpu_layers, actual, own):
    e = estimate_need(llama_facts(quant=quant), ctx_size=ctx, parallel=parallel, gpu_layers=gpu_layers,
                      cache_k="f16", cache_v="f16")
    assert actual * MiB <= e.total_bytes <= 1.15 * actual * MiB
    if own:  # each part at least what llama.cpp itself reports for it (to its rounding)
        model, context, compute = own
        assert model * MiB <= e.weights_bytes < (model + 1) * MiB
        assert e.kv_cache_bytes == context * MiB
        assert compute * MiB <= e.compute_bytes <= (compute + 16) * MiB


@pytest.mark.parametrize(("n_embd", "own_compute"), [(2048, 254), (4096, 258)])
def test_compute_buffer_covers_a_128k_vocabulary(n_embd, own_compute):
    # llama.cpp's fit tool: 254-258 MiB for the 1B and 8B shapes with Llama 3's vocabulary.
    f = llama_facts(n_embd=n_embd, n_vocab=128256, n_head=32)
    e = estimate_need(f, **{**BARE, "ctx_size": 4096})
    assert own_compute * MiB <= e.compute_bytes <= (own_compute + 16) * MiB
    assert f.token_embd_bytes == 128256 * n_embd * 2  # 501 MiB at n_embd 2048: in RAM, not on the GPU
    assert e.host_bytes == f.token_embd_bytes


def test_flash_attention_off_counts_the_attention_scores():
    f = llama_facts()
    kw = {**BARE, "ctx_size": 32768}
    on, off = estimate_need(f, **kw, flash_attn="on"), estimate_need(f, **kw, flash_attn="off")
    assert on.compute_bytes < 200 * MiB  # the mask: 32768 x 512 x (4 + 2) bytes = 96 MiB
    assert off.compute_bytes >= 32768 * 512 * 32 * 4  # the f32 KQ of one layer: 2 GiB
    assert estimate_need(f, **kw).compute_bytes == on.compute_bytes  # auto: head size 64 has CUDA kernels
    odd = dataclasses.replace(f, key_length=192, value_length=128)  # no kernel: auto falls back to off
    assert estimate_need(odd, **kw).compute_bytes > estimate_need(odd, **kw, flash_attn="on").compute_bytes
    assert estimate_need(odd, **{**kw, "cache_v": "q8_0"}).compute_bytes < GiB  # a quantized V forces it on
    assert estimate_need(odd, **kw, device="cpu").compute_bytes < GiB  # every head size on the CPU


def test_a_quantized_cache_with_flash_attention_needs_f16_copies_of_one_layer():
    f = llama_facts()
    kw = {**BARE, "ctx_size": 32768, "flash_attn": "on"}
    f16, q8 = estimate_need(f, **kw), estimate_need(f, **{**kw, "cache_k": "q8_0", "cache_v": "q8_0"})
    assert q8.compute_bytes >= 32768 * 8 * (64 + 64) * 2  # K and V of a layer as f16
    assert q8.kv_cache_bytes < f16.kv_cache_bytes


def test_ubatch_sizes_the_compute_buffer():
    f = llama_facts(n_vocab=128256)
    small = estimate_need(f, **{**BARE, "ctx_size": 4096}, n_ubatch=128)
    default = estimate_need(f, **{**BARE, "ctx_size": 4096})
    big = estimate_need(f, **{**BARE, "ctx_size": 4096}, n_ubatch=2048)
    capped = estimate_need(f, **{**BARE, "ctx_size": 4096}, n_ubatch=2048, n_batch=512)  # ubatch <= batch
    assert small.compute_bytes < default.compute_bytes < big.compute_bytes
    assert capped.compute_bytes == default.compute_bytes
    assert big.compute_bytes >= 128256 * 2048 * 4


# -- shapes users run: monotone, and never below llama.cpp's own parts ---------

SHAPES = {
    "1B 32k": dict(n_embd=2048, n_layers=16, n_head=32, n_head_kv=8, n_ff=8192, n_vocab=32000),
    "3B 128k": dict(n_embd=3072, n_layers=28, n_head=24, n_head_kv=8, n_ff=8192, n_vocab=128256, tied=True),
    "8B 128k": dict(n_embd=4096, n_layers=32, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=128256),
    "gemma-ish 256k": dict(n_embd=2560, n_layers=34, n_head=8, n_head_kv=4, n_ff=10240, n_vocab=262144, tied=True),
    "14B 152k": dict(n_embd=5120, n_layers=48, n_head=40, n_head_kv=8, n_ff=13824, n_vocab=152064),
    "32B 152k": dict(n_embd=5120, n_layers=64, n_head=40, n_head_kv=8, n_ff=25600, n_vocab=152064),
    "Qwen3-30B-A3B": dict(n_embd=2048, n_layers=48, n_head=32, n_head_kv=4, n_ff=0, n_vocab=151936,
                          n_expert=128, n_expert_used=8, n_ff_expert=768),
}


def _gpu(f, **kw):
    return estimate_need(f, **{"ctx_size": 8192, "parallel": 1, "gpu_layers": "all", "cache_k": "f16",
                               "cache_v": "f16", **kw})


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_k_m"])
def test_every_shape_counts_at_least_its_gpu_tensors_kv_and_logits(shape, quant):
    kw = dict(SHAPES[shape])
    f = llama_facts(quant=quant, **kw)
    e = _gpu(f)
    assert e.weights_bytes == sum(f.block_bytes) + f.output_bytes
    hd = kw["n_embd"] // kw["n_head"]
    assert e.kv_cache_bytes == kw["n_layers"] * 8192 * kw["n_head_kv"] * hd * 2 * 2
    assert e.compute_bytes >= (kw["n_vocab"] + kw["n_embd"]) * 512 * 4  # what llama.cpp reserves for logits
    assert e.total_bytes >= e.weights_bytes + e.kv_cache_bytes + e.compute_bytes + 400 * MiB
    assert e.host_bytes == f.token_embd_bytes


@pytest.mark.parametrize("shape", list(SHAPES))
def test_more_of_anything_never_needs_less(shape):
    f = llama_facts(quant="q4_k_m", **SHAPES[shape])
    totals = [_gpu(f, ctx_size=c).total_bytes for c in (2048, 4096, 8192, 32768, 131072)]
    assert totals == sorted(totals) and len(set(totals)) == len(totals)
    by_layers = [_gpu(f, gpu_layers=k).total_bytes for k in range(0, f.n_layers + 2)]
    assert by_layers == sorted(by_layers)
    assert _gpu(f, parallel=4).total_bytes >= _gpu(f).total_bytes
    assert _gpu(f, n_ubatch=1024).total_bytes > _gpu(f).total_bytes
    assert _gpu(f, flash_attn="off").total_bytes >= _gpu(f, flash_attn="on").total_bytes
    assert _gpu(f, mmproj_bytes=GiB).total_bytes >= _gpu(f).total_bytes + GiB
    # device + host never loses a byte of the weights or the cache when layers move
    kv_all = _gpu(f, device="cpu").kv_cache_bytes
    copy = f.token_embd_bytes if SHAPES[shape].get("tied") else 0  # the tied output's GPU copy
    for k in (0, 1, f.n_layers // 2, f.n_layers, f.n_layers + 1):
        e = _gpu(f, gpu_layers=k)
        assert e.weights_bytes + e.kv_cache_bytes + e.host_bytes == f.weights_bytes + kv_all + (copy if k else 0)


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


def test_parts_come_from_tensor_names(tmp_path):
    path = tmp_path / "m.gguf"
    blk = {f"blk.{i}.{n}": np.zeros((8, 16 * (i + 1)), np.float16) for i in range(3) for n in ("attn_q.weight", "ffn_up.weight")}
    write_gguf(path, {**LLAMA_KEYS, "llama.feed_forward_length": 256, "llama.vocab_size": 100},
               {"token_embd.weight": np.zeros((100, 64), np.float16), **blk,
                "rope_freqs.weight": np.zeros(8, np.float32),
                "output_norm.weight": np.zeros(64, np.float32), "output.weight": np.zeros((100, 64), np.float16)})
    f = read_gguf_facts(path)
    assert f.block_bytes == tuple(2 * 8 * 16 * (i + 1) * 2 for i in range(3))
    assert f.max_block_tensor_bytes == 8 * 48 * 2
    assert (f.token_embd_bytes, f.output_bytes, f.other_bytes) == (100 * 64 * 2, 100 * 64 * 2 + 64 * 4, 32)
    assert not f.tied_output
    assert f.weights_bytes == sum(f.block_bytes) + f.token_embd_bytes + f.output_bytes + f.other_bytes
    assert (f.n_vocab, f.n_ff, f.n_expert) == (100, 256, 0)  # no tokenizer: {arch}.vocab_size

    write_gguf(path, {**LLAMA_KEYS, "llama.expert_count": 8, "llama.expert_used_count": 2,
                      "llama.expert_feed_forward_length": 32},
               {"token_embd.weight": np.zeros((50, 64), np.float16), "blk.0.ffn_up_exps.weight": np.zeros((8, 32, 64), np.float16),
                "output_norm.weight": np.zeros(64, np.float32)})
    tied = read_gguf_facts(path)
    assert tied.tied_output and tied.output_bytes == 50 * 64 * 2 + 64 * 4  # the GPU gets a copy of the embedding
    assert tied.weights_bytes == 50 * 64 * 2 + 8 * 32 * 64 * 2 + 64 * 4  # the file holds it once
    assert tied.block_bytes == (8 * 32 * 64 * 2, 0, 0)  # blocks without tensors still count, as 0
    assert (tied.n_vocab, tied.n_expert, tied.n_expert_used, tied.n_ff_expert) == (50, 8, 2, 32)  # vocab: embd rows


def _make_tiny_gguf():
    spec = importlib.util.spec_from_file_location("make_tiny_gguf", Path(__file__).parents[2] / "scripts" / "make_tiny_gguf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory) -> Path:
    """A 300-token SentencePiece-style tokenizer GGUF: the generator's input, without building llama.cpp."""
    path = tmp_path_factory.mktemp("vocab") / "vocab.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}" for i in range(300)])
    w.add_token_scores([float(-i) for i in range(300)])
    w.add_token_types([1] * 300)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_generated_model_facts_match_its_shape(tmp_path, small_vocab):
    gen = _make_tiny_gguf()
    path = gen.write_tiny_model(tmp_path / "m.gguf", name="m", seed=3, vocab=small_vocab, n_embd=128, n_layers=3,
                                n_head=8, n_head_kv=2, n_ff=256, n_vocab=1000, n_ctx_train=4096)
    f = read_gguf_facts(path)
    assert (f.n_layers, f.n_embd, f.n_head, f.n_head_kv, f.key_length, f.n_ff, f.n_vocab, f.n_ctx_train) == \
        (3, 128, 8, 2, 16, 256, 1000, 4096)
    per_block = 2 * 128 * 4 + (128 * 128 * 2 + 2 * 32 * 128 + 3 * 256 * 128) * 2
    assert f.block_bytes == (per_block,) * 3
    assert (f.token_embd_bytes, f.output_bytes) == (1000 * 128 * 2, 1000 * 128 * 2 + 128 * 4)
    tokens = gguf.GGUFReader(path).fields["tokenizer.ggml.tokens"]
    assert bytes(tokens.parts[tokens.data[-1]]) == b"<filler_999>"
    with pytest.raises(ValueError, match="below"):
        gen.write_tiny_model(tmp_path / "x.gguf", name="x", seed=1, vocab=small_vocab, n_vocab=10)


def test_generator_defaults_are_the_tiny_test_model(tmp_path, small_vocab):
    gen = _make_tiny_gguf()
    plain = gen.write_tiny_model(tmp_path / "a.gguf", name="t", seed=1, vocab=small_vocab)
    explicit = gen.write_tiny_model(tmp_path / "b.gguf", name="t", seed=1, vocab=small_vocab, n_embd=64, n_layers=2,
                                    n_head=4, n_head_kv=4, n_ff=128, n_vocab=300, n_ctx_train=32768)
    assert plain.read_bytes() == explicit.read_bytes()
    f = read_gguf_facts(plain)
    assert (f.n_embd, f.n_layers, f.n_head, f.n_head_kv, f.n_ff, f.n_vocab, f.n_ctx_train) == (64, 2, 4, 4, 128, 300, 32768)


# -- specs ---------------------------------------------------------------------

def test_estimate_spec_reads_batch_and_flash_attention_args(tmp_path):
    write_gguf(tmp_path / "m.gguf", {**LLAMA_KEYS, "llama.vocab_size": 1000},
               {"token_embd.weight": np.zeros((1000, 64), np.float16)})
    facts = read_gguf_facts(tmp_path / "m.gguf")
    args = ("-ub", "1024", "--batch-size=4096", "-fa", "off", "-ctk", "q8_0")
    spec = ModelSpec(name="m", model="m.gguf", ctx_size=8192, args=args)
    expected = estimate_need(facts, ctx_size=8192, parallel=spec.parallel, gpu_layers="all", cache_k="q8_0",
                             cache_v="f16", n_batch=4096, n_ubatch=1024, flash_attn="off")
    assert estimate_spec(spec, tmp_path) == expected
    assert estimate_spec(spec, tmp_path, device="cpu").overhead_bytes == 0
    assert estimate_spec(ModelSpec(name="m", model="m.gguf", args=("-ub", "many")), tmp_path) is None


def test_unknown_estimates_are_none(tmp_path):
    assert estimate_spec(ModelSpec(name="m", hf="ggml-org/gemma-3-1b-it-GGUF:Q4_K_M"), tmp_path) is None
    assert estimate_spec(ModelSpec(name="m", model="absent.gguf"), tmp_path) is None
    write_gguf(tmp_path / "m.gguf", LLAMA_KEYS, {"w": np.zeros(4, np.float32)})
    assert estimate_spec(ModelSpec(name="m", model="m.gguf"), tmp_path) is not None
    assert estimate_spec(ModelSpec(name="m", model="m.gguf", mmproj="absent.gguf"), tmp_path) is None
    assert estimate_spec(ModelSpec(name="m", model="m.gguf", args=("-ctv", "q9_9")), tmp_path) is None


def test_the_orchestrator_reads_gguf_headers_in_a_child_process_and_never_loads_numpy(tmp_path):
    # The reader's objects (one per vocab token) would stay in the long-lived orchestrator's heap.
    import subprocess
    import sys
    probe = ("import sys, pathlib; import orchestrator.service, orchestrator.manager; "
             "from orchestrator.estimate import read_gguf_facts; "
             f"f = read_gguf_facts(pathlib.Path({str(tmp_path / 'm.gguf')!r})); "
             "assert f.n_layers == 2, f; assert 'numpy' not in sys.modules and 'gguf' not in sys.modules")
    w = gguf.GGUFWriter(tmp_path / "m.gguf", "llama")
    for key, value in (("block_count", 2), ("context_length", 4096), ("embedding_length", 64),
                       ("attention.head_count", 4)):
        w.add_uint32(f"llama.{key}", value)
    w.add_tensor("blk.0.attn_q.weight", np.zeros((64, 64), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
