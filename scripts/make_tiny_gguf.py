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

Realistic shapes for memory checks (bench/gpu_check.py), e.g. the Llama-3.2-1B
shape with a Llama-3-sized vocabulary (the tokenizer is extended with filler
tokens up to ``--n-vocab``):

    python scripts/make_tiny_gguf.py 1b.gguf --name 1b --n-embd 2048 --n-layers 16 \
        --n-head 32 --n-head-kv 8 --n-ff 8192 --n-vocab 128256
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


# Per-token arrays and what a filler token (added to reach --n-vocab) gets in each.
_FILLER = {"tokenizer.ggml.tokens": lambda i: f"<filler_{i}>".encode(),
           "tokenizer.ggml.scores": lambda i: -1e9,
           "tokenizer.ggml.token_type": lambda i: 4}  # USER_DEFINED: matched whole, never merged


def _copy_tokenizer(writer: gguf.GGUFWriter, vocab: Path, n_vocab: int | None = None) -> int:
    """Copy every ``tokenizer.*`` key of ``vocab`` into ``writer``; return n_vocab.

    With ``n_vocab`` above the vocab's own size, filler tokens are appended to
    the per-token arrays (the model's matrices get that many rows).
    """
    vocab = vocab.resolve()
    entries = _tokenizer_kv(vocab, vocab.stat().st_mtime_ns)
    base = next((len(val) for key, val, _, _ in entries if key == "tokenizer.ggml.tokens"), 0)  # type: ignore[arg-type]
    if not base:
        raise ValueError(f"{vocab}: no tokenizer.ggml.tokens array")
    n_vocab = n_vocab or base
    if n_vocab < base:
        raise ValueError(f"n_vocab {n_vocab} is below the tokenizer's {base} tokens")
    for key, val, main, sub in entries:
        if key in _FILLER and n_vocab > base:
            val = [*val, *(_FILLER[key](i) for i in range(base, n_vocab))]  # type: ignore[misc]
        writer.add_key_value(key, val, main, sub_type=sub)
    return n_vocab


def write_tiny_model(
    path: Path,
    *,
    name: str,
    seed: int,
    vocab: Path = DEFAULT_VOCAB,
    suppress_control_tokens: bool = True,
    n_embd: int = N_EMBD,
    n_layers: int = N_LAYER,
    n_head: int = N_HEAD,
    n_head_kv: int = N_HEAD_KV,
    n_ff: int = N_FF,
    n_vocab: int | None = None,
    n_ctx_train: int = N_CTX_TRAIN,
) -> Path:
    """Write the model to ``path`` (parent dirs created) and return ``path``.

    The defaults give the tiny test model; the shape arguments give realistic
    ones (``n_vocab`` None: the tokenizer's own size).
    """
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError(f"n_embd {n_embd} must divide by n_head {n_head}, and n_head by n_head_kv {n_head_kv}")
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
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    n_vocab = _copy_tokenizer(w, vocab, n_vocab)
    w.add_vocab_size(n_vocab)
    w.add_chat_template(CHAT_TEMPLATE)

    def f16(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * STD).astype(np.float16)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    # gguf numpy shapes are ggml ne reversed: a ggml [n_in, n_out] matrix is (n_out, n_in).
    head_dim = n_embd // n_head
    tok_embd = f16(n_vocab, n_embd)
    output = f16(n_vocab, n_embd)
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
    for i in range(n_layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", ones(n_embd))
        w.add_tensor(f"blk.{i}.attn_q.weight", f16(n_head * head_dim, n_embd))
        w.add_tensor(f"blk.{i}.attn_k.weight", f16(n_head_kv * head_dim, n_embd))
        w.add_tensor(f"blk.{i}.attn_v.weight", f16(n_head_kv * head_dim, n_embd))
        w.add_tensor(f"blk.{i}.attn_output.weight", f16(n_embd, n_head * head_dim))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", ones(n_embd))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", f16(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", f16(n_ff, n_embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", f16(n_embd, n_ff))
    w.add_tensor("output_norm.weight", ones(n_embd))
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
    shape = p.add_argument_group("shape (defaults: the tiny test model)")
    shape.add_argument("--n-embd", type=int, default=N_EMBD)
    shape.add_argument("--n-layers", type=int, default=N_LAYER)
    shape.add_argument("--n-head", type=int, default=N_HEAD)
    shape.add_argument("--n-head-kv", type=int, default=N_HEAD_KV)
    shape.add_argument("--n-ff", type=int, default=N_FF)
    shape.add_argument("--n-vocab", type=int, default=None, help="vocabulary size (default: the tokenizer's)")
    shape.add_argument("--n-ctx-train", type=int, default=N_CTX_TRAIN)
    a = p.parse_args(argv)
    out = write_tiny_model(a.out, name=a.name, seed=a.seed, vocab=a.vocab,
                           suppress_control_tokens=not a.allow_control_tokens, n_embd=a.n_embd,
                           n_layers=a.n_layers, n_head=a.n_head, n_head_kv=a.n_head_kv, n_ff=a.n_ff,
                           n_vocab=a.n_vocab, n_ctx_train=a.n_ctx_train)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
