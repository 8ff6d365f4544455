"""GPU self-check: the memory estimate against what the card really gives, load time, and streaming.

For each configuration (GPU.md's table plus a 128k-vocabulary model) it writes a
random-weight model of realistic shape with scripts/make_tiny_gguf.py, quantizes
it with llama-quantize, starts llama-server with the command line the
orchestrator uses, and prints: the estimate (orchestrator/estimate.py), NVML's
per-process memory one second after /health, their ratio (the target is 1.00 to
1.15), and the load time.  Then it streams through the gateway (``python -m
gateway``, a host process) and straight to llama-server at 1, 8 and 32 clients
and prints tokens/s and the gateway's CPU per token (/proc/PID/stat).

    scripts/gpu-check.sh                     # finds or builds a CUDA llama-server, then runs this
    .venv/bin/python bench/gpu_check.py --llama-server PATH [--llama-quantize PATH] [--smoke]

``--smoke`` (used by the tests on machines without a GPU): the tiny model, two
configurations, short streams; NVML columns read "n/a" where there is no GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from gateway_overhead import cpu_seconds, round_  # noqa: E402
from orchestrator.estimate import MiB, estimate_need, read_gguf_facts  # noqa: E402
from support.gateway import GatewayProcess, write_upstreams  # noqa: E402
from support.llama import LlamaServer, _tiny_gguf_module  # noqa: E402

SHAPE_1B = dict(n_embd=2048, n_layers=16, n_head=32, n_head_kv=8, n_ff=8192)


@dataclass(frozen=True)
class Config:
    name: str
    shape: dict  # make_tiny_gguf shape arguments; {} is the tiny test model
    quant: str  # "F16" (as written) or a llama-quantize type
    ctx: int
    parallel: int
    gpu_layers: int | str = "all"


# GPU.md section 1's table, and the same shape with Llama 3's vocabulary.
FULL = [
    Config("1B F16 ctx 4096 p1", SHAPE_1B, "F16", 4096, 1),
    Config("1B F16 ctx 32768 p4", SHAPE_1B, "F16", 32768, 4),
    Config("1B Q4_K_M ctx 8192 p8", SHAPE_1B, "Q4_K_M", 8192, 8),
    Config("1B Q4_K_M ctx 0 p2", SHAPE_1B, "Q4_K_M", 0, 2),
    Config("1B Q4_K_M ctx 4096 ngl 8", SHAPE_1B, "Q4_K_M", 4096, 1, 8),
    Config("1B-128k Q4_K_M ctx 8192 p4", {**SHAPE_1B, "n_vocab": 128256}, "Q4_K_M", 8192, 4),
]
SMOKE = [
    Config("tiny F16 ctx 2048 p1", {}, "F16", 2048, 1),
    Config("tiny F16 ctx 4096 p2 ngl 1", {}, "F16", 4096, 2, 1),
]


@dataclass
class MemoryRow:
    config: str
    estimate_mib: float
    actual_mib: float | None  # NVML per-process; None without a GPU
    load_s: float
    parts: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.estimate_mib / self.actual_mib if self.actual_mib else None

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "n/a"
        return "ok" if 1.0 <= self.ratio <= 1.15 else ("UNDER" if self.ratio < 1.0 else "high")


def parse_compute_apps(csv_text: str) -> dict[int, int]:
    """``nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits`` -> {pid: MiB}.

    A process on several GPUs appears once per GPU: summed.  "[N/A]" (WSL2) is skipped.
    """
    used: dict[int, int] = {}
    for line in csv_text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        used[int(parts[0])] = used.get(int(parts[0]), 0) + int(parts[1])
    return used


def nvml_used_mib(pid: int) -> float | None:
    """NVML's memory of ``pid`` in MiB, via nvidia-smi; None without a GPU or per-process figures."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    mib = parse_compute_apps(out).get(pid)
    return float(mib) if mib is not None else None


def has_gpu() -> bool:
    try:
        return bool(shutil.which("nvidia-smi")) and subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def make_model(cfg: Config, work: Path, vocab: Path, quantize: Path | None) -> Path | None:
    """The model file for ``cfg`` (written once per shape and type); None when it needs a missing llama-quantize."""
    shape_key = "tiny" if not cfg.shape else "-".join(f"{v}" for v in cfg.shape.values())
    f16 = work / f"{shape_key}-F16.gguf"
    if not f16.exists():
        _tiny_gguf_module().write_tiny_model(f16, name=shape_key, seed=1, vocab=vocab, **cfg.shape)
    if cfg.quant == "F16":
        return f16
    out = work / f"{shape_key}-{cfg.quant}.gguf"
    if not out.exists():
        if quantize is None:
            return None
        subprocess.run([str(quantize), str(f16), str(out), cfg.quant], check=True, capture_output=True)
    return out


def measure_memory(cfg: Config, model: Path, binary: Path, gpu: bool, work: Path) -> MemoryRow:
    facts = read_gguf_facts(model)
    est = estimate_need(facts, ctx_size=cfg.ctx, parallel=cfg.parallel, gpu_layers=cfg.gpu_layers,
                        cache_k="f16", cache_v="f16", device="gpu" if gpu else "cpu")
    layers = 999 if cfg.gpu_layers == "all" else cfg.gpu_layers
    server = LlamaServer(binary, model, parallel=cfg.parallel, ctx=cfg.ctx, log_dir=work, threads=4,
                         extra_args=["--n-gpu-layers", str(layers if gpu else 0), "--metrics", "--slots"])
    started = time.perf_counter()
    with server.start(timeout=600):
        load_s = time.perf_counter() - started
        time.sleep(1.0)  # GPU.md's figures were read one second after /health
        actual = nvml_used_mib(server.pid) if gpu else None
    parts = {k: round(v / MiB, 1) for k, v in est.model_dump().items()}
    return MemoryRow(cfg.name, est.total_bytes / MiB, actual, load_s, parts)


def measure_streaming(model: Path, binary: Path, gpu: bool, levels: list[int], tokens: int, rounds: int,
                      work: Path) -> list[dict]:
    slots = max(levels)
    server = LlamaServer(binary, model, parallel=slots, ctx=slots * (tokens + 128), log_dir=work, threads=4,
                         alias="bench", extra_args=["--n-gpu-layers", "999" if gpu else "0"])
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "Tell me a story"}],
                       "max_tokens": tokens, "ignore_eos": True, "stream": True}).encode()
    rows = []
    with server.start(timeout=600):
        upstreams = write_upstreams(work / "upstreams.yaml", {"bench": {"url": server.url}})
        with GatewayProcess(upstreams) as gateway:
            urls = {"direct": server.url, "gateway": gateway.url}
            for url in urls.values():
                asyncio.run(round_(url, 1, body))  # warm both paths
            for clients in levels:
                totals = {p: [0, 0.0] for p in urls}
                cpu = 0.0
                for rnd in range(rounds):
                    for path in (urls if rnd % 2 == 0 else list(reversed(urls))):
                        before = cpu_seconds(gateway.pid)
                        n, elapsed, _ = asyncio.run(round_(urls[path], clients, body))
                        if path == "gateway":
                            cpu += cpu_seconds(gateway.pid) - before
                        totals[path][0] += n
                        totals[path][1] += elapsed
                direct = totals["direct"][0] / totals["direct"][1]
                through = totals["gateway"][0] / totals["gateway"][1]
                rows.append({"clients": clients, "direct_tps": direct, "gateway_tps": through,
                             "ratio": through / direct,
                             "gateway_cpu_us_per_token": cpu / max(totals["gateway"][0], 1) * 1e6,
                             "tokens": totals["gateway"][0]})
    return rows


def render(memory: list[MemoryRow], streaming: list[dict], device: str) -> str:
    lines = [f"GPU self-check on {device}", "",
             f"{'configuration':32} {'estimate MiB':>12} {'actual MiB':>10} {'ratio':>6} {'verdict':>7} {'load s':>7}"]
    for r in memory:
        actual = f"{r.actual_mib:.0f}" if r.actual_mib is not None else "n/a"
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else "n/a"
        lines.append(f"{r.config:32} {r.estimate_mib:12.0f} {actual:>10} {ratio:>6} {r.verdict:>7} {r.load_s:7.2f}")
    if streaming:
        lines += ["", f"{'clients':>7} {'direct tok/s':>12} {'gateway tok/s':>13} {'gw/direct':>9} {'gw CPU/token':>12}"]
        for s in streaming:
            lines.append(f"{s['clients']:7d} {s['direct_tps']:12.0f} {s['gateway_tps']:13.0f} {s['ratio']:9.3f}"
                         f" {s['gateway_cpu_us_per_token']:10.0f}µs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llama-server", type=Path, required=True)
    p.add_argument("--llama-quantize", type=Path, help="needed for the quantized configurations (skipped without)")
    p.add_argument("--vocab", type=Path, help="tokenizer GGUF (default: next to the llama-server build's cache)")
    p.add_argument("--smoke", action="store_true", help="tiny model, two configurations, short streams")
    p.add_argument("--clients", default=None, help="streaming concurrency levels (default 1,8,32; smoke 1,2)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per stream (default 400; smoke 16)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per level (default 3; smoke 1)")
    p.add_argument("--work", type=Path, help="where models are written (kept, so a rerun skips writing them)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args(argv)

    gpu = has_gpu()
    configs = SMOKE if a.smoke else FULL
    levels = [int(c) for c in (a.clients or ("1,2" if a.smoke else "1,8,32")).split(",")]
    tokens = a.tokens or (16 if a.smoke else 400)
    rounds = a.rounds or (1 if a.smoke else 3)
    vocab = a.vocab or _tiny_gguf_module().DEFAULT_VOCAB
    if not Path(vocab).is_file():  # the build script keeps it next to the binary
        vocab = a.llama_server.resolve().parent.parent / "vocab" / "ggml-vocab-llama-spm.gguf"
    work = a.work or Path(tempfile.mkdtemp(prefix="llamadock-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    device = "GPU (" + subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                      capture_output=True, text=True).stdout.strip() + ")" if gpu else "CPU (no GPU)"

    memory: list[MemoryRow] = []
    for cfg in configs:
        model = make_model(cfg, work, Path(vocab), a.llama_quantize)
        if model is None:
            print(f"skipped {cfg.name}: no llama-quantize", file=sys.stderr)
            continue
        memory.append(measure_memory(cfg, model, a.llama_server, gpu, work))
        print(f"{cfg.name}: estimate {memory[-1].estimate_mib:.0f} MiB {memory[-1].parts}", file=sys.stderr)
    stream_model = make_model(configs[2] if len(configs) > 2 else configs[0], work, Path(vocab), a.llama_quantize) \
        or make_model(configs[0], work, Path(vocab), a.llama_quantize)
    streaming = measure_streaming(stream_model, a.llama_server, gpu, levels, tokens, rounds, work)
    print(render(memory, streaming, device))
    if a.json:
        a.json.write_text(json.dumps({"device": device, "memory": [{**r.__dict__, "ratio": r.ratio} for r in memory],
                                      "streaming": streaming}, indent=2))
    return 1 if any(r.verdict == "UNDER" for r in memory) else 0


if __name__ == "__main__":
    raise SystemExit(main())
