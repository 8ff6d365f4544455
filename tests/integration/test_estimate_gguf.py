"""The memory estimate on the real tiny models (llama.cpp's 32k tokenizer; the fixtures build llama-server)."""

from __future__ import annotations

from orchestrator.estimate import MiB, estimate_need, estimate_spec, read_gguf_facts
from contract.spec import ModelSpec


def test_facts_of_a_real_tiny_model(tiny_models):
    path = tiny_models["tiny-a"]
    facts = read_gguf_facts(path)
    assert (facts.arch, facts.n_layers, facts.n_ctx_train) == ("llama", 2, 32768)
    assert (facts.n_embd, facts.n_head, facts.n_head_kv) == (64, 4, 4)
    assert (facts.key_length, facts.value_length) == (16, 16)  # absent keys: n_embd / n_head
    assert (facts.n_vocab, facts.n_ff) == (32000, 128)
    assert facts.token_embd_bytes == facts.output_bytes - 64 * 4 == 32000 * 64 * 2
    size = path.stat().st_size
    assert 0.8 * size < facts.weights_bytes < size  # the rest is the 32k-token vocab


def test_estimate_spec_reads_the_file_the_args_and_the_mmproj(tmp_path, tiny_models):
    (tmp_path / "tiny.gguf").symlink_to(tiny_models["tiny-a"])
    (tmp_path / "proj.gguf").write_bytes(b"\0" * 1000)
    spec = ModelSpec(name="tiny", model="tiny.gguf", mmproj="proj.gguf", ctx_size=4096, parallel=2,
                     gpu_layers=2, args=("-ctk", "q8_0", "--flash-attn", "on"))
    facts = read_gguf_facts(tmp_path / "tiny.gguf")
    expected = estimate_need(facts, ctx_size=4096, parallel=2, gpu_layers=2, cache_k="q8_0", cache_v="f16",
                             mmproj_bytes=1000, flash_attn="on")
    assert estimate_spec(spec, tmp_path) == expected
    # --n-gpu-layers 2 of 2 blocks: the output layer and the last block, so 1 layer x 4096 cells
    # x 4 KV heads x (16 x 34/32 + 16 x 2) bytes
    assert expected.kv_cache_bytes == 4096 * 4 * (17 + 32)
    on_cpu = estimate_spec(spec, tmp_path, device="cpu", margin=0)
    assert on_cpu.weights_bytes == facts.weights_bytes
    assert on_cpu.overhead_bytes == 0
    assert on_cpu.total_bytes == on_cpu.weights_bytes + on_cpu.kv_cache_bytes + on_cpu.compute_bytes + 1000
    assert on_cpu.compute_bytes >= 32000 * 512 * 4  # the logits of one ubatch
    assert on_cpu.compute_bytes < 100 * MiB
