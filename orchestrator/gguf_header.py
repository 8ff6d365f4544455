"""Reading a GGUF's header (``gguf.GGUFReader``, memory-mapped: tensor data is never read) into the
facts the memory estimate needs. Run as its own process by ``estimate.read_gguf_facts``:

    python -m orchestrator.gguf_header PART [PART ...]   # prints GgufFacts as JSON

(or ``{"error": ..., "kind": "value" | "os"}``), so the orchestrator never holds the reader's objects.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import gguf

from .estimate import BLOCK_TENSOR, GgufFacts


def _open(path: Path) -> gguf.GGUFReader:
    try:
        return gguf.GGUFReader(path)  # memory-mapped: tensor data is never read
    except OSError:
        raise
    except Exception as e:  # a truncated or foreign file fails in numpy/struct with any error
        raise ValueError(f"{path}: not a readable GGUF file ({e})") from e


def _number(reader: gguf.GGUFReader, key: str, default: int | None = None) -> int:
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise ValueError(f"{reader.data.filename}: GGUF metadata has no {key!r}")
        return default
    if field.types[0] == gguf.GGUFValueType.ARRAY:  # per-layer values (e.g. head_count_kv): the largest
        values = [int(field.parts[i][0]) for i in field.data]
        if not values:
            raise ValueError(f"{reader.data.filename}: GGUF metadata {key!r} is an empty array")
        return max(values)
    return int(field.parts[field.data[0]][0])


def _string(reader: gguf.GGUFReader, key: str) -> str:
    field = reader.fields.get(key)
    if field is None:
        raise ValueError(f"{reader.data.filename}: GGUF metadata has no {key!r}")
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def _n_vocab(reader: gguf.GGUFReader, arch: str, token_embd_shape: tuple[int, ...] | None) -> int:
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is not None and len(tokens.data):
        return len(tokens.data)
    vocab_size = _number(reader, f"{arch}.vocab_size", 0)
    if vocab_size:
        return vocab_size
    return int(token_embd_shape[-1]) if token_embd_shape else 0  # ggml order: (n_embd, n_vocab)


def facts_of(paths: list[Path]) -> GgufFacts:
    """The facts of a GGUF from all its parts, first first."""
    first = _open(paths[0])
    arch = _string(first, "general.architecture")
    n_layers = _number(first, f"{arch}.block_count")
    n_embd = _number(first, f"{arch}.embedding_length")
    n_head = _number(first, f"{arch}.attention.head_count")
    head_dim = n_embd // n_head if n_head else 0

    blocks: dict[int, int] = {}
    biggest = output = token_embd = other = total = 0
    has_output = False
    embd_shape = None
    for tensor in [*first.tensors, *(t for p in paths[1:] for t in _open(p).tensors)]:
        size = int(tensor.n_bytes)
        total += size
        if m := BLOCK_TENSOR.match(tensor.name):
            blocks[int(m[1])] = blocks.get(int(m[1]), 0) + size
            biggest = max(biggest, size)
        elif tensor.name == "token_embd.weight":
            token_embd, embd_shape = size, tuple(int(n) for n in tensor.shape)
        elif tensor.name.startswith("output"):  # output.weight, output_norm.*, output.bias
            output += size
            has_output = has_output or tensor.name == "output.weight"
        else:
            other += size
    if not has_output:
        output += token_embd  # tied: llama.cpp duplicates token_embd as the output layer
    return GgufFacts(
        arch=arch,
        n_layers=n_layers,
        n_ctx_train=_number(first, f"{arch}.context_length"),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=_number(first, f"{arch}.attention.head_count_kv", n_head),  # absent: no GQA, as llama.cpp reads it
        key_length=_number(first, f"{arch}.attention.key_length", head_dim),
        value_length=_number(first, f"{arch}.attention.value_length", head_dim),
        weights_bytes=total,
        block_bytes=tuple(blocks.get(i, 0) for i in range(max([n_layers - 1, *blocks]) + 1)) if blocks else (),
        output_bytes=output,
        tied_output=not has_output,
        token_embd_bytes=token_embd,
        other_bytes=other,
        max_block_tensor_bytes=biggest,
        n_vocab=_n_vocab(first, arch, embd_shape),
        n_ff=_number(first, f"{arch}.feed_forward_length", 0),
        n_expert=_number(first, f"{arch}.expert_count", 0),
        n_expert_used=_number(first, f"{arch}.expert_used_count", 0),
        n_ff_expert=_number(first, f"{arch}.expert_feed_forward_length", 0)
        + _number(first, f"{arch}.expert_shared_feed_forward_length", 0),
    )


def main(argv: list[str]) -> int:
    try:
        facts = facts_of([Path(p) for p in argv])
    except OSError as exc:
        print(json.dumps({"error": f"{exc.filename or argv[0]}: {exc.strerror or exc}", "kind": "os"}))
        return 0
    except ValueError as exc:
        print(json.dumps({"error": str(exc), "kind": "value"}))
        return 0
    print(json.dumps(dataclasses.asdict(facts)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
