"""How much memory a model's llama-server will need, known before it starts.

The scheduler must decide whether a model fits next to the ones already running
without starting it to find out (a CUDA out-of-memory crash costs a minute and a
confusing log). The GGUF header has everything needed for a good first guess:

    total = (weights + KV cache + mmproj) x (1 + margin) + overhead

- weights: the sum of the tensor data sizes in the GGUF (all split parts).
- KV cache = n_layers x cells x n_head_kv x (key_length x bytes(cache_k) + value_length x bytes(cache_v))
  cells is llama-server's total context, shared by the ``parallel`` slots, so
  ``parallel`` does not multiply it, except that llama.cpp rounds the context up
  to a multiple of 256 and then each slot's share up to a multiple of 256 too
  (--ctx-size 4096 with 64 slots allocates 64 x 256 = 16384 cells).
  --ctx-size 0 means n_ctx_train *per slot*: llama-server's default --fit on
  sizes the cache to n_ctx_train x parallel (checked against the vendored
  llama.cpp of llama-cpp-python 0.3.36, common/fit.cpp, and a real server).
  With --fit off or --kv-unified it would be n_ctx_train in all; we do not
  look for those flags, so such a spec is over-estimated, the safe side.
- With gpu_layers below n_layers only that fraction of weights and KV cache
  lands on the GPU; the rest is in RAM and not counted.
- overhead: compute buffers and the CUDA context, a flat amount.

Worked example, an 8B llama (32 layers, 8 KV heads, head dim 128) at ctx 8192, f16:
KV = 32 x 8192 x 8 x (128 x 2 + 128 x 2) = 1 GiB; with 4.6 GiB of Q4_K_M weights,
(4.6 + 1.0) x 1.05 + 0.25 = 6.1 GiB. q8_0 for both caches roughly halves the KV:
34/32 instead of 2 bytes per element, 0.53 GiB.

Not modelled (all make the estimate high, not low): sliding-window attention
caches (gemma, …), recurrent layers, the output layer staying on the CPU.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import gguf

from orchestrator.spec import ModelSpec

GiB = 2**30
MiB = 2**20

# Bytes per element: block size in bytes over elements per block (ggml's type traits).
CACHE_TYPE_BYTES: dict[str, float] = {
    "f32": 4, "f16": 2, "bf16": 2,
    "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32, "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32,
}
DEFAULT_CACHE_TYPE = "f16"
CTX_PAD = 256  # llama.cpp's context padding (llama-context.cpp)

SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class GgufFacts:
    """What the memory estimate needs from a GGUF header."""

    arch: str
    n_layers: int
    n_ctx_train: int
    n_embd: int
    n_head: int
    n_head_kv: int
    key_length: int
    value_length: int
    weights_bytes: int  # sum of tensor data sizes over all split parts (not file sizes: no vocab, no padding)


@dataclass(frozen=True)
class Estimate:
    """Bytes a model needs on the GPU (in RAM on a CPU host); the parts add up to ``total_bytes``."""

    weights_bytes: int
    kv_cache_bytes: int
    mmproj_bytes: int
    overhead_bytes: int  # the flat overhead plus the safety margin
    total_bytes: int

    def describe(self) -> str:
        parts = [f"weights {_size(self.weights_bytes)}", f"KV cache {_size(self.kv_cache_bytes)}"]
        if self.mmproj_bytes:
            parts.append(f"mmproj {_size(self.mmproj_bytes)}")
        parts.append(f"overhead {_size(self.overhead_bytes)}")
        return f"{_size(self.total_bytes)} ({' + '.join(parts)})"


def _size(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def split_parts(path: Path) -> list[Path]:
    """Every part of a split GGUF (``name-00001-of-00003.gguf``), first first; ``[path]`` when not split."""
    match = SPLIT_NAME.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    return [path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


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


def read_gguf_facts(path: Path) -> GgufFacts:
    """The header facts of the GGUF at ``path`` (any part of a split one).

    ValueError when it is not a GGUF, lacks a needed key or misses a split part; OSError when unreadable.
    """
    parts = split_parts(Path(path))
    missing = [p.name for p in parts if not p.is_file()]
    if len(parts) > 1 and missing:
        raise ValueError(f"{path}: split GGUF is missing {', '.join(missing)}")
    # Parsing a large vocab takes seconds; the cache key changes when any part does.
    stamps = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in parts)
    return _read_facts(stamps)


@functools.lru_cache(maxsize=64)
def _read_facts(stamps: tuple[tuple[str, int, int], ...]) -> GgufFacts:
    paths = [Path(p) for p, _, _ in stamps]
    first = _open(paths[0])
    arch = _string(first, "general.architecture")
    n_embd = _number(first, f"{arch}.embedding_length")
    n_head = _number(first, f"{arch}.attention.head_count")
    head_dim = n_embd // n_head if n_head else 0
    weights = sum(int(t.n_bytes) for t in first.tensors)
    weights += sum(int(t.n_bytes) for p in paths[1:] for t in _open(p).tensors)
    return GgufFacts(
        arch=arch,
        n_layers=_number(first, f"{arch}.block_count"),
        n_ctx_train=_number(first, f"{arch}.context_length"),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=_number(first, f"{arch}.attention.head_count_kv", n_head),  # absent: no GQA, as llama.cpp reads it
        key_length=_number(first, f"{arch}.attention.key_length", head_dim),
        value_length=_number(first, f"{arch}.attention.value_length", head_dim),
        weights_bytes=weights,
    )


def cache_types(args: tuple[str, ...]) -> tuple[str, str]:
    """The (K, V) cache types llama-server gets from ``args``; f16 unless set. The last flag wins, as in llama.cpp."""
    flags = {"--cache-type-k": 0, "-ctk": 0, "--cache-type-v": 1, "-ctv": 1}
    types = [DEFAULT_CACHE_TYPE, DEFAULT_CACHE_TYPE]
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag not in flags:
            continue
        if not eq:
            if i + 1 >= len(args):
                continue
            value = args[i + 1]
        types[flags[flag]] = value
    return types[0], types[1]


def kv_cells(ctx_size: int, parallel: int, n_ctx_train: int) -> int:
    """How many KV cache cells llama-server allocates for ``--ctx-size ctx_size --parallel parallel``."""
    total = ctx_size or n_ctx_train * parallel
    total = -(-total // CTX_PAD) * CTX_PAD
    per_slot = -(-(total // parallel) // CTX_PAD) * CTX_PAD
    return per_slot * parallel


def _bytes_per_element(cache_type: str) -> float:
    try:
        return CACHE_TYPE_BYTES[cache_type]
    except KeyError:
        raise ValueError(f"unknown KV cache type {cache_type!r}; known: {', '.join(CACHE_TYPE_BYTES)}") from None


def estimate_need(
    facts: GgufFacts,
    *,
    ctx_size: int,
    parallel: int,
    gpu_layers: int | str,
    cache_k: str,
    cache_v: str,
    mmproj_bytes: int = 0,
    overhead_bytes: int = 256 * MiB,
    margin: float = 0.05,
) -> Estimate:
    """The memory the model needs on the GPU; pure arithmetic (see the module docstring)."""
    cells = kv_cells(ctx_size, max(parallel, 1), facts.n_ctx_train)
    per_cell_and_layer = facts.n_head_kv * (
        facts.key_length * _bytes_per_element(cache_k) + facts.value_length * _bytes_per_element(cache_v)
    )
    kv = facts.n_layers * cells * per_cell_and_layer
    weights = facts.weights_bytes
    if gpu_layers != "all" and int(gpu_layers) < facts.n_layers:
        on_gpu = max(int(gpu_layers), 0) / facts.n_layers
        weights, kv = weights * on_gpu, kv * on_gpu
    weights, kv = round(weights), round(kv)
    sized = weights + kv + mmproj_bytes
    overhead = round(sized * margin) + overhead_bytes
    return Estimate(weights, kv, mmproj_bytes, overhead, sized + overhead)


def estimate_spec(spec: ModelSpec, models_dir: Path, **overrides) -> Estimate | None:
    """``estimate_need`` for a spec, from its files under ``models_dir``; None when that cannot be known.

    None for an ``hf`` source (not downloaded yet) and for a missing or unreadable
    file. ``overrides`` go to ``estimate_need``, e.g. ``gpu_layers="all"`` on a
    CPU-only host, where everything lands in RAM.
    """
    if spec.model is None:
        return None
    models_dir = Path(models_dir)
    try:
        facts = read_gguf_facts(models_dir / spec.model)
        mmproj_bytes = (models_dir / spec.mmproj).stat().st_size if spec.mmproj else 0  # loaded whole
        cache_k, cache_v = cache_types(spec.args)
        params = dict(ctx_size=spec.ctx_size, parallel=spec.parallel, gpu_layers=spec.gpu_layers,
                      cache_k=cache_k, cache_v=cache_v, mmproj_bytes=mmproj_bytes)
        return estimate_need(facts, **{**params, **overrides})
    except (OSError, ValueError):
        return None
