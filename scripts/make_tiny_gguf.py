#!/usr/bin/env python3
"""Write a tiny random-weight llama-architecture GGUF for tests.

The tokenizer (32,000-token SentencePiece llama vocab) is copied from
llama.cpp's ``ggml-vocab-llama-spm.gguf``; the weights are F16 noise
(normal, std 0.02) drawn from ``seed``.  Shape: embedding 64, 2 blocks,
4 heads / 4 KV heads, FFN 128, trained context 32768 -- about 9 MB, and fast
enough on one CPU thread for ~1000+ tokens/s.

The output text is gibberish (random tokens, odd Unicode included).  The
control tokens <unk>/<s>/</s> are made unreachable (their output rows are
steered against a constant embedding channel), so the model never stops on
its own: generation always runs to ``max_tokens`` (finish_reason "length"),
which keeps token counts in tests deterministic.

    python scripts/make_tiny_gguf.py OUT.gguf --name tiny-a --seed 1 [--vocab PATH]
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

import numpy as np
import gguf

DEFAULT_VOCAB = (
    Path(os.environ.get("LLAMADOCK_CACHE", Path.home() / ".cache" / "llamadock"))
    / f"llama-server-{os.environ.get('LLAMA_CPP_PYTHON_VERSION', '0.3.36')}"
    / "vocab"
    / "ggml-vocab-llama-spm.gguf"
)

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
N_CTX_TRAIN = 32768  # large so long-generation tests are not capped; the KV size follows --ctx-size
STD = 0.02

# ChatML-ish; minja (llama-server --jinja) and the legacy detector both accept it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@functools.lru_cache(maxsize=4)
def _tokenizer_kv(vocab: Path, _mtime_ns: int) -> tuple[tuple[str, object, gguf.GGUFValueType, gguf.GGUFValueType | None], ...]:
    """Every ``tokenizer.*`` key of ``vocab`` as (key, value, type, sub_type).

    GGUFReader takes ~3 s on the 32k vocab, so this is cached per file version.
    """
    reader = gguf.GGUFReader(vocab)
    out = []
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = field.types[0]
        sub = None
        if main == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            if sub == gguf.GGUFValueType.STRING:
                # raw bytes: no decode/encode round trip of the token texts
                val: object = [bytes(field.parts[i]) for i in field.data]
            else:
                val = [field.parts[i].tolist()[0] for i in field.data]
        elif main == gguf.GGUFValueType.STRING:
            val = bytes(field.parts[field.data[0]])
        else:
            val = field.parts[field.data[0]].tolist()[0]
        out.append((key, val, main, sub))
    return tuple(out)


def _copy_tokenizer(writer: gguf.GGUFWriter, vocab: Path) -> int:
    """Copy every ``tokenizer.*`` key of ``vocab`` into ``writer``; return n_vocab."""
    vocab = vocab.resolve()
    n_vocab = 0
    for key, val, main, sub in _tokenizer_kv(vocab, vocab.stat().st_mtime_ns):
        writer.add_key_value(key, val, main, sub_type=sub)
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(val)  # type: ignore[arg-type]
    if not n_vocab:
        raise ValueError(f"{vocab}: no tokenizer.ggml.tokens array")
    return n_vocab


def write_tiny_model(
    path: Path,
    *,
    name: str,
    seed: int,
    vocab: Path = DEFAULT_VOCAB,
    suppress_control_tokens: bool = True,
) -> Path:
    """Write the tiny model to ``path`` (parent dirs created) and return ``path``."""
    path = Path(path)
    vocab = Path(vocab)
    if not vocab.is_file():
        raise FileNotFoundError(f"vocab GGUF not found: {vocab} (run scripts/build-llama-server.sh)")
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name(name)
    w.add_description(f"tiny random-weight test model (seed {seed})")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    n_vocab = _copy_tokenizer(w, vocab)
    w.add_vocab_size(n_vocab)
    w.add_chat_template(CHAT_TEMPLATE)

    def f16(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * STD).astype(np.float16)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    # gguf numpy shapes are ggml ne reversed: a ggml [n_in, n_out] matrix is (n_out, n_in).
    head_dim = N_EMBD // N_HEAD
    tok_embd = f16(n_vocab, N_EMBD)
    output = f16(n_vocab, N_EMBD)
    if suppress_control_tokens:
        # Channel 0 of every embedding is a constant 1.0, which dominates the
        # residual stream there (blocks add only ~0.02-scale noise), so after
        # RMS norm h[0] ~ +8 for every position.  Rows with output[.,0] = -10
        # then get logits ~ -80: never sampled.  Other rows keep their noise.
        tok_embd[:, 0] = 1.0
        output[:, 0] = 0.0
        scores_ctrl = [i for i in (0, 1, 2) if i < n_vocab]  # <unk>, <s>, </s>
        output[scores_ctrl, 0] = -10.0
    w.add_tensor("token_embd.weight", tok_embd)
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_norm.weight", ones(N_EMBD))
        w.add_tensor(f"blk.{i}.attn_q.weight", f16(N_HEAD * head_dim, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_k.weight", f16(N_HEAD_KV * head_dim, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_v.weight", f16(N_HEAD_KV * head_dim, N_EMBD))
        w.add_tensor(f"blk.{i}.attn_output.weight", f16(N_EMBD, N_HEAD * head_dim))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", ones(N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", f16(N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_up.weight", f16(N_FF, N_EMBD))
        w.add_tensor(f"blk.{i}.ffn_down.weight", f16(N_EMBD, N_FF))
    w.add_tensor("output_norm.weight", ones(N_EMBD))
    w.add_tensor("output.weight", output)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)  # appear whole or not at all
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output .gguf path")
    p.add_argument("--name", required=True, help="general.name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", type=Path, default=DEFAULT_VOCAB, help=f"tokenizer GGUF (default {DEFAULT_VOCAB})")
    p.add_argument("--allow-control-tokens", action="store_true",
                   help="do not suppress <unk>/<s>/</s> (the model may then stop early on EOS)")
    a = p.parse_args(argv)
    out = write_tiny_model(a.out, name=a.name, seed=a.seed, vocab=a.vocab,
                           suppress_control_tokens=not a.allow_control_tokens)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
