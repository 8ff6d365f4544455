"""How much memory a model's llama-server will need, known before it starts.

The scheduler must decide whether a model fits next to the ones already running
without starting it to find out (a CUDA out-of-memory crash costs a minute and a
confusing log).  The GGUF header has what is needed, if we model what llama.cpp
really allocates (checked against the llama.cpp vendored in llama-cpp-python
0.3.36 and against an H100, see "Worked example").  On one GPU:

    total = weights on the GPU + KV cache on the GPU + mmproj + compute buffer
            + CUDA overhead + margin

- Layers.  ``--n-gpu-layers k`` counts the output layer as one layer
  (llama-model.cpp: ``i_gpu_start = n_layer + 1 - k``): k > n_layer puts every
  block and the output layer (``output.weight``, ``output_norm``) on the GPU;
  1 <= k <= n_layer puts the *last* k - 1 blocks and the output layer there;
  k = 0 puts none.  The token embedding (``token_embd``) always stays in host
  RAM ("very little benefit to offloading the input layer").  A model with tied
  embeddings (no ``output.weight``) gets a copy of ``token_embd`` as its output
  layer (TENSOR_DUPLICATED), so the GPU holds one of its size.  Blocks are summed
  one by one from the tensor names (``blk.N.*``, MoE experts included): quantized
  blocks differ in size (Q4_K_M gives some blocks Q6_K tensors).
- KV cache = (layers on the GPU) x cells x n_head_kv x (key_length x bytes(cache_k)
  + value_length x bytes(cache_v)); the KV of a block lives where the block does.
  cells is llama-server's total context, shared by the ``parallel`` slots, so
  ``parallel`` does not multiply it, except that llama.cpp rounds the context up
  to a multiple of 256 and then each slot's share up to a multiple of 256 too
  (--ctx-size 4096 with 64 slots allocates 64 x 256 = 16384 cells).
  --ctx-size 0 means n_ctx_train *per slot*: llama-server's default --fit on
  sizes the cache to n_ctx_train x parallel (common/fit.cpp, and a real server).
  With --fit off or --kv-unified it would be n_ctx_train in all; we do not
  look for those flags, so such a spec is over-estimated, the safe side.
- Compute buffer: the peak of the graph llama.cpp reserves for one ubatch of
  n_ubatch tokens (``-ub``, default 512, at most ``-b``), each tensor freed after
  its last use.  The largest of these stages (4 bytes per f32 element):
    output:    (n_vocab + n_embd) x n_ubatch x 4      -- the logits; 66.5 MiB at 32k
               vocab and n_embd 2048, 254.5 MiB at 128k: what llama.cpp reports
    attention: with flash attention, the KQ mask in f32 and its f16 cast,
               cells_per_slot x n_ubatch x 6, plus K and V converted to f16 when
               the cache is quantized; without it, the scores
               cells_per_slot x n_ubatch x n_head x 4 (the mask on top) -- 8 GiB at
               32k context and 128 heads, which is why "off" matters
    FFN:       3 x n_ff x n_ubatch x 4 (MoE: the n_expert_used experts' share)
  plus the residual stream, plus, with some blocks on the CPU, a copy of the
  largest block tensor (llama.cpp runs the CPU layers' big matmuls on the GPU),
  plus 8 MiB of slack.  ``--flash-attn auto`` (the default) is taken as on where
  CUDA's kernels support the head size (64, 128, 256, ... with K and V alike) or
  the V cache is quantized (which forces it on), and as off elsewhere.
- CUDA overhead: the CUDA context, cuBLAS workspace, memory pool and graphs: not
  in any buffer llama.cpp reports, and not a constant (588 MiB on one H100,
  400-510 on another; 250-450 on consumer cards).  The default, 640 MiB, is above
  all of them; the gateway learns the real figure per GPU and passes it.
- margin: 1 % of the device-resident parts (tensor padding, rounding).

Without a GPU (``device="cpu"``) everything is in RAM: all tensors, the token
embedding included, every layer's KV cache and the compute buffer; no CUDA
overhead.  With a GPU, ``host_bytes`` is what stays in RAM besides: the token
embedding, the blocks (and output layer) not offloaded and their KV cache.

Worked example, measured on an H100 (80 GB, driver 580, CUDA 13): a llama of
the Llama-3.2-1B shape (n_embd 2048, 16 blocks, 32 heads, 8 KV heads of 64,
FFN 8192, 32,000-token vocab), F16, --ctx-size 4096 --parallel 1, all layers:

    weights  16 blocks + output = 1981 MiB   (the 125 MiB token embedding: host)
    KV       16 x 4096 x 8 x (64 x 2 + 64 x 2) = 128 MiB
    compute  (32000 + 2048) x 512 x 4 = 66.5 MiB + 8 slack = 74.5 MiB
    overhead 640 MiB, margin 1 % of 2184 = 22 MiB
    total    2846 MiB; NVML showed 2762 (llama.cpp's own figures: 1981 + 128 + 66)

The same model in Q4_K_M with --n-gpu-layers 8 puts 7 blocks and the output
layer on the GPU (297 MiB, 7 layers' KV = 56 MiB, 72 MiB on the host) and
copies a 13 MiB Q6_K ffn_down in for the CPU layers' matmuls (compute 79 MiB by
llama.cpp's count, 87.6 with the slack): 1085 MiB estimated, 1020 used.  On all
five configurations measured there the estimate is 2-7 % above NVML's figure.

Not modelled: sliding-window caches (gemma, ...; too high), recurrent layers,
--kv-unified / --fit off (too high), and -- possibly low -- the multimodal
projector's own compute buffer, the dequantisation buffers of GPUs too old for
llama.cpp's quantized matmul kernels, and pipeline parallelism across several
GPUs (llama.cpp then keeps up to 4 copies of the graph inputs).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from contract.listing import MemoryEstimate
from contract.spec import ModelSpec

from .launch import DEFAULT_BATCH, DEFAULT_UBATCH, describe_launch

GiB = 2**30
MiB = 2**20

# Bytes per element: block size in bytes over elements per block (ggml's type traits).
CACHE_TYPE_BYTES: dict[str, float] = {
    "f32": 4, "f16": 2, "bf16": 2,
    "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32, "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32,
}
CTX_PAD = 256  # llama.cpp's context padding (llama-context.cpp)
CUDA_OVERHEAD = 640 * MiB  # above every per-process overhead measured (see the module docstring)
COMPUTE_SLACK = 8 * MiB
DEFAULT_MARGIN = 0.01
UNKNOWN_VOCAB = 262144  # a GGUF without a vocab size: assume the largest in use (gemma 3)
# Head sizes (K = V) for which CUDA's flash-attention kernels exist (ggml-cuda/fattn.cu).
CUDA_FA_HEAD_SIZES = frozenset({40, 64, 72, 80, 96, 112, 128, 256})

SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.")

Device = Literal["gpu", "cpu"]
READ_TIMEOUT_S = 300.0  # a split GGUF with a large vocab takes seconds


@dataclass(frozen=True)
class GgufFacts:
    """What the memory estimate needs from a GGUF header.

    The part sizes default to "unknown" (hand-made facts in tests): then every
    byte of ``weights_bytes`` is taken as block weights, spread evenly.
    """

    arch: str
    n_layers: int
    n_ctx_train: int
    n_embd: int
    n_head: int
    n_head_kv: int
    key_length: int
    value_length: int
    weights_bytes: int  # sum of tensor data sizes over all split parts (not file sizes: no vocab, no padding)
    block_bytes: tuple[int, ...] = ()  # per block, blk.0 first
    output_bytes: int = 0  # output.weight + output_norm.*; tied: a copy of token_embd (on a GPU)
    tied_output: bool = False  # no output.weight: token_embd serves (in RAM the same bytes, no copy)
    token_embd_bytes: int = 0
    other_bytes: int = 0  # tensors outside the blocks, the output and the embedding (rope_freqs, ...)
    max_block_tensor_bytes: int = 0  # the largest single tensor of a block
    n_vocab: int = 0  # 0: unknown
    n_ff: int = 0  # dense FFN width (largest over layers); 0: unknown
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_expert: int = 0


def split_parts(path: Path) -> list[Path]:
    """Every part of a split GGUF (``name-00001-of-00003.gguf``), first first; ``[path]`` when not split."""
    match = SPLIT_NAME.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    return [path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


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
    # In a short-lived process: gguf's reader turns a 150k-token vocab into as many numpy objects
    # (tens of MB), which a long-lived orchestrator would keep as heap it never gives back, and
    # gguf and numpy are then never imported here at all.
    paths = [p for p, _, _ in stamps]
    done = subprocess.run([sys.executable, "-m", "orchestrator.gguf_header", *paths], capture_output=True,
                          text=True, timeout=READ_TIMEOUT_S)
    try:
        answer = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise ValueError(f"{paths[0]}: its GGUF header could not be read ({done.stderr.strip()[-300:]})") from None
    if "error" in answer:
        raise (OSError if answer["kind"] == "os" else ValueError)(answer["error"])
    return GgufFacts(**{**answer, "block_bytes": tuple(answer["block_bytes"])})


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


def _uses_flash_attn(mode: str, facts: GgufFacts, cache_v: str, device: Device) -> bool:
    if mode != "auto":
        return mode == "on"
    if cache_v not in ("f16", "bf16", "f32"):
        return True  # a quantized V cache needs it: llama.cpp turns auto into on
    if device == "cpu":
        return True  # the CPU backend has it for every head size
    return facts.key_length == facts.value_length and facts.key_length in CUDA_FA_HEAD_SIZES


def compute_buffer(
    facts: GgufFacts, *, cells: int, parallel: int, n_ubatch: int, use_fa: bool, cache_k: str, cache_v: str,
    layers_elsewhere: bool,
) -> int:
    """Bytes of the compute buffer llama.cpp reserves on one device (see the module docstring)."""
    tokens = min(n_ubatch, cells)
    per_slot = cells // max(parallel, 1)
    f32 = 4
    n_vocab = facts.n_vocab or UNKNOWN_VOCAB
    residual = 2 * facts.n_embd * tokens * f32  # the stream and its normed copy
    output = (n_vocab + facts.n_embd) * tokens * f32
    qkv = (facts.n_head * facts.key_length + facts.n_head_kv * (facts.key_length + facts.value_length)) * tokens * f32
    if use_fa:
        scores = per_slot * tokens * 6  # the f32 mask and its f16 cast
        if cache_k not in ("f16", "bf16") or cache_v not in ("f16", "bf16"):
            scores += cells * facts.n_head_kv * (facts.key_length + facts.value_length) * 2  # K, V as f16
    else:
        scores = per_slot * tokens * (facts.n_head + 1) * f32  # KQ (softmax in place) and the mask
    n_ff = max(facts.n_ff, facts.n_expert_used * facts.n_ff_expert) or 4 * facts.n_embd
    ffn = 3 * n_ff * tokens * f32
    if facts.n_expert:  # router logits, and each token's rows copied per expert used
        ffn += (2 * facts.n_expert + facts.n_expert_used * facts.n_embd) * tokens * f32
    peak = max(output, residual + qkv + scores, residual + ffn)
    return peak + (facts.max_block_tensor_bytes if layers_elsewhere else 0) + COMPUTE_SLACK


def _parts(facts: GgufFacts) -> tuple[list[int], int, int, int]:
    """(per-block bytes, output, token embedding, other), guessing evenly when the GGUF's split is unknown."""
    if facts.block_bytes:
        return list(facts.block_bytes), facts.output_bytes, facts.token_embd_bytes, facts.other_bytes
    rest = facts.weights_bytes - facts.output_bytes - facts.token_embd_bytes - facts.other_bytes
    n = max(facts.n_layers, 1)
    return [rest // n + (1 if i < rest % n else 0) for i in range(n)], facts.output_bytes, \
        facts.token_embd_bytes, facts.other_bytes


def gpu_layers_count(gpu_layers: int | str, n_layers: int) -> int:
    """llama.cpp's layer count on the GPU: the blocks plus the output layer, so at most n_layers + 1."""
    return n_layers + 1 if gpu_layers == "all" else min(max(int(gpu_layers), 0), n_layers + 1)


def estimate_need(
    facts: GgufFacts,
    *,
    ctx_size: int,
    parallel: int,
    gpu_layers: int | str,
    cache_k: str,
    cache_v: str,
    mmproj_bytes: int = 0,
    device: Device = "gpu",
    n_batch: int = DEFAULT_BATCH,
    n_ubatch: int = DEFAULT_UBATCH,
    flash_attn: str = "auto",
    overhead_bytes: int = CUDA_OVERHEAD,
    margin: float = DEFAULT_MARGIN,
) -> MemoryEstimate:
    """The memory the model needs on one GPU (``device="gpu"``) or in RAM (``"cpu"``); pure arithmetic.

    ``overhead_bytes`` is the per-process CUDA overhead (a learned figure when
    the caller has one); it is ignored on a CPU.
    """
    if device not in ("gpu", "cpu"):
        raise ValueError(f"device must be 'gpu' or 'cpu', not {device!r}")
    parallel = max(parallel, 1)
    cells = kv_cells(ctx_size, parallel, facts.n_ctx_train)
    kv_per_layer = cells * facts.n_head_kv * (
        facts.key_length * _bytes_per_element(cache_k) + facts.value_length * _bytes_per_element(cache_v)
    )
    blocks, output, token_embd, other = _parts(facts)
    output_in_ram = output - (token_embd if facts.tied_output else 0)
    n_blocks = facts.n_layers
    if device == "cpu":
        gpu_blocks, output_on_device = list(range(len(blocks))), True
        on_device_extra, output = token_embd, output_in_ram
    else:
        k = gpu_layers_count(gpu_layers, n_blocks)
        first = n_blocks + 1 - k  # llama.cpp's i_gpu_start: the last blocks go to the GPU
        gpu_blocks = [i for i in range(len(blocks)) if i >= first] if k else []
        output_on_device, on_device_extra = k > 0, 0
    gpu_set = set(gpu_blocks)
    kv_layers = sum(1 for i in range(n_blocks) if i in gpu_set)
    weights = sum(blocks[i] for i in gpu_blocks) + on_device_extra
    if output_on_device:
        weights += output + other
    kv = round(kv_layers * kv_per_layer)
    use_fa = _uses_flash_attn(flash_attn, facts, cache_v, device)
    compute = compute_buffer(
        facts, cells=cells, parallel=parallel, n_ubatch=min(n_ubatch, n_batch), use_fa=use_fa,
        cache_k=cache_k, cache_v=cache_v, layers_elsewhere=device == "gpu" and kv_layers < n_blocks)
    overhead = overhead_bytes if device == "gpu" else 0
    margin_bytes = round((weights + kv + mmproj_bytes + compute) * margin)
    total = weights + kv + compute + mmproj_bytes + overhead + margin_bytes
    if device == "cpu":
        host = 0
    else:
        cpu_blocks = sum(b for i, b in enumerate(blocks) if i not in gpu_set)
        host = token_embd + cpu_blocks + (0 if output_on_device else output_in_ram + other) \
            + round((n_blocks - kv_layers) * kv_per_layer)
    return MemoryEstimate(weights_bytes=weights, kv_cache_bytes=kv, compute_bytes=compute, mmproj_bytes=mmproj_bytes,
                    overhead_bytes=overhead, margin_bytes=margin_bytes, total_bytes=total, host_bytes=host)


def estimate_spec(spec: ModelSpec, models_dir: Path, **overrides) -> MemoryEstimate | None:
    """``estimate_need`` for a spec, from its files under ``models_dir``; None when that cannot be known.

    What llama-server is given (context, slots, GPU layers, cache types, batch sizes,
    flash attention) is read from the spec's launch (launch.py), as its command line is.
    None for an ``hf`` source (not downloaded yet), for a missing or unreadable file and
    for a launch llama-server would refuse.  ``overrides`` go to ``estimate_need``, e.g.
    ``device="cpu"`` on a CPU-only host, where everything lands in RAM.
    """
    if spec.model is None:
        return None
    models_dir = Path(models_dir)
    launch = describe_launch(spec, gpu=overrides.get("device", "gpu") == "gpu")
    try:
        if launch.invalid:
            raise ValueError("; ".join(launch.invalid))
        facts = read_gguf_facts(models_dir / launch.model)
        mmproj_bytes = (models_dir / launch.mmproj).stat().st_size if launch.mmproj else 0  # loaded whole
        params = dict(ctx_size=launch.ctx_size, parallel=launch.parallel, gpu_layers=launch.gpu_layers,
                      cache_k=launch.cache_type_k, cache_v=launch.cache_type_v, mmproj_bytes=mmproj_bytes,
                      n_batch=launch.batch_size, n_ubatch=launch.ubatch_size, flash_attn=launch.flash_attn)
        return estimate_need(facts, **{**params, **overrides})
    except (OSError, ValueError):
        return None
