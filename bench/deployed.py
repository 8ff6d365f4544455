"""Streaming as apps get it: the stack as deployed, beside the floor and the alternatives.

One stack (`make up` under a test project), one tiny model in its container with a
slot per client, and these paths to it, interleaved round by round (the order
rotates) so machine noise hits them alike:

  direct      the model container's llama-server, at its address on the stack network
  published   the gateway at Docker's published port, 127.0.0.1:PORT: the address apps call
  gateway-ip  the gateway container at its own address (what the published port adds is visible)
  forwarder   a byte-for-byte TCP forwarder on the host -> model container (the floor)
  naive       FastAPI + httpx StreamingResponse on the host -> model container
  litellm     LiteLLM proxy on the host -> model container, when installed
              (bench/setup-litellm.sh puts it in .bench/litellm; skipped with a note otherwise)

For each: tokens/s as a ratio to direct per round (median and min-max over rounds),
added time to first token (p50), and CPU per streamed token of the proxy: the gateway
from its container's cgroup (plus docker-proxy, the userland proxy behind a published
port, when one runs), the host processes from /proc; "of which idle" is what the proxy spends
with no traffic over the same seconds (the gateway's healthchecks, its NVML reads), measured
for 5 s before the rounds.

    make bench          # or: .venv/bin/python bench/deployed.py --rounds 8 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from gateway.proxy import upstream  # noqa: E402  (the lean HTTP client doubles as the load generator)
from support.llama import ensure_llama_server, make_tiny_model, vocab_path  # noqa: E402
from support.net import free_port  # noqa: E402
from support.stack import Stack, local_llama_image  # noqa: E402
from support.waiting import wait_until  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LITELLM = REPO / ".bench" / "litellm" / "bin" / "litellm"
# Model shapes (scripts/make_tiny_gguf.py): the test model, and one a few hundred times its compute per token.
MODELS: dict[str, dict[str, int]] = {
    "tiny": {},
    "small": {"n_embd": 384, "n_layers": 6, "n_head": 6, "n_head_kv": 2, "n_ff": 1024},
}


# ---- CPU accounting -----------------------------------------------------------------------------

def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def cgroup_cpu_s(pid: int) -> float:
    """CPU seconds of the whole cgroup that ``pid`` is in (a container: all its processes), v1 or v2."""
    lines = dict(line.split(":", 2)[1:] for line in Path("/proc", str(pid), "cgroup").read_text().splitlines())
    for controllers, path in lines.items():
        if "cpuacct" in controllers.split(","):  # v1: nanoseconds
            for mount in ("cpuacct", "cpu,cpuacct"):
                usage = Path("/sys/fs/cgroup", mount, path.lstrip("/"), "cpuacct.usage")
                if usage.exists():
                    return int(usage.read_text()) / 1e9
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):  # v2: microseconds
        stat = Path(root, lines.get("", "/").lstrip("/"), "cpu.stat")
        if stat.exists():
            usage = next(line for line in stat.read_text().splitlines() if line.startswith("usage_usec"))
            return int(usage.split()[1]) / 1e6
    raise RuntimeError(f"no CPU accounting found for the cgroup of PID {pid}")


def docker_proxy_pids(port: int) -> list[int]:
    """The userland proxy processes serving a published host port (none with userland-proxy off)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"docker-proxy") and str(port).encode() in argv:
            pids.append(int(proc.name))
    return pids


@dataclass
class Meter:
    """CPU seconds of one path's proxy: container cgroups and host processes."""
    cgroup_pids: list[int] = field(default_factory=list)
    process_pids: list[int] = field(default_factory=list)

    def read(self) -> float:
        return sum(cgroup_cpu_s(p) for p in self.cgroup_pids) + sum(process_cpu_s(p) for p in self.process_pids)


# ---- load ---------------------------------------------------------------------------------------

async def one_stream(base_url: str, body: bytes) -> tuple[int, float]:
    """Stream one completion; (tokens, seconds to first byte of the answer)."""
    started = time.perf_counter()
    response = await upstream.send(base_url, "POST", "/v1/chat/completions",
                                   [(b"content-type", b"application/json"), (b"authorization", b"Bearer x")], body)
    assert response.status == 200, response.status
    data, ttft = bytearray(), 0.0
    while (piece := await response.next_piece()) is not None:
        if not ttft:
            ttft = time.perf_counter() - started
        data += piece
    response.close()
    # One SSE event per token, plus the finish chunk and [DONE] (a proxy may re-chunk: count events).
    events = [e for e in bytes(data).split(b"\n\n") if e.strip().startswith(b"data:")]
    return max(0, len(events) - 2), ttft


async def one_round(base_url: str, clients: int, body: bytes) -> tuple[int, float, list[float]]:
    started = time.perf_counter()
    results = await asyncio.gather(*(one_stream(base_url, body) for _ in range(clients)))
    return sum(t for t, _ in results), time.perf_counter() - started, [t for _, t in results]


# ---- the stack and the side paths ---------------------------------------------------------------

def inspect(container: str, template: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", template, container], capture_output=True, text=True,
                          check=True).stdout.strip()


def container_ip(container: str) -> str:
    return inspect(container, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")


def start_side_process(argv: list[str], url: str, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=1)
            return True
        except httpx.TransportError:
            return False
    wait_until(answers, 120, f"{' '.join(argv[:3])} to answer")
    return process


def start_litellm(model_url: str, work: Path) -> tuple[subprocess.Popen | None, str | None]:
    if not LITELLM.exists():
        return None, "LiteLLM not installed (bash bench/setup-litellm.sh installs it into .bench/)"
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(json.dumps({"model_list": [{"model_name": "bench", "litellm_params": {
        "model": "openai/bench", "api_base": f"{model_url}/v1", "api_key": "unused"}}],
        "litellm_settings": {"drop_params": False}}))
    # A benchmark on loopback, against a model with no key: LiteLLM refuses that unless told.
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}
    process = subprocess.Popen([str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                                "--num_workers", "1"], stdout=(work / "litellm.log").open("wb"),
                               stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: process.poll() is None and httpx.get(f"http://127.0.0.1:{port}/health/liveliness",
                                                              timeout=1).status_code == 200,
                 180, "LiteLLM to answer")
    except AssertionError:
        process.kill()
        return None, "LiteLLM did not start: " + (work / "litellm.log").read_text()[-300:]
    return process, f"http://127.0.0.1:{port}"


# ---- run ----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per concurrency level")
    parser.add_argument("--tokens", type=int, default=400, help="tokens per request")
    parser.add_argument("--clients", default="1,8", help="concurrency levels, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--requests", type=int, default=10_000, help="requests sent before reading RSS")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny",
                        help="tiny: the test model (thousands of tok/s, the worst case for a proxy); "
                        "small: random weights shaped so a CPU decodes at rates real models have on a GPU")
    parser.add_argument("--model-args", default="", help="extra llama-server arguments for the model, e.g. "
                        "'--threads 1' (to compare settings; the default is what the orchestrator gives)")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    slots = max(levels)

    binary = ensure_llama_server()
    work = Path(tempfile.mkdtemp(prefix="llamadock-bench-"))
    stack = Stack(work / "stack", llama_image=local_llama_image())
    make_tiny_model(stack.models / "bench.gguf", name="bench", seed=1, vocab=vocab_path(binary), **MODELS[args.model])
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "Tell me a story"}],
                       "max_tokens": args.tokens, "ignore_eos": True, "stream": True}).encode()
    side: list[subprocess.Popen] = []
    notes: list[str] = []
    try:
        stack.run("make", "up")
        stack.admin.post("/admin/models", json={"name": "bench", "model": "bench.gguf", "parallel": slots,
                                                "ctx_size": slots * 1024,
                                                "args": shlex.split(args.model_args)}).raise_for_status()
        model_container = f"{stack.project}-model-bench"
        gateway_container = stack.compose("ps", "-q", "gateway").stdout.strip()
        model_url = f"http://{container_ip(model_container)}:8080"
        gateway_pid = int(inspect(gateway_container, "{{.State.Pid}}"))

        urls = {"direct": model_url, "published": stack.url}
        meters = {"published": Meter([gateway_pid], docker_proxy_pids(stack.port))}
        if inspect(gateway_container, "{{.HostConfig.NetworkMode}}") == "host":
            notes.append("the gateway runs on the host's network: 'published' is its own loopback port, "
                         "no docker-proxy, no separate container address")
        else:
            urls["gateway-ip"] = f"http://{container_ip(gateway_container)}:8080"
            meters["gateway-ip"] = Meter([gateway_pid])
            if not meters["published"].process_pids:
                notes.append("no docker-proxy behind the published port (the daemon's userland proxy is off)")

        port = free_port()
        side.append(start_side_process([sys.executable, str(REPO / "bench" / "tcp_forwarder.py"),
                                        f"{container_ip(model_container)}:8080", str(port)],
                                       f"http://127.0.0.1:{port}/health", work / "forwarder.log"))
        urls["forwarder"], meters["forwarder"] = f"http://127.0.0.1:{port}", Meter([], [side[-1].pid])
        port = free_port()
        side.append(start_side_process([sys.executable, str(REPO / "bench" / "naive_proxy.py"), model_url, str(port)],
                                       f"http://127.0.0.1:{port}/docs", work / "naive.log"))
        urls["naive"], meters["naive"] = f"http://127.0.0.1:{port}", Meter([], [side[-1].pid])
        if not args.no_litellm:
            litellm, where = start_litellm(model_url, work)
            if litellm is None:
                notes.append(where)
            else:
                side.append(litellm)
                urls["litellm"], meters["litellm"] = where, Meter([], [litellm.pid])

        for url in urls.values():
            asyncio.run(one_round(url, slots, body))  # warm every path: prompt cache, imports, pools
        idle = {path: idle_rate(meter) for path, meter in meters.items()}
        rows = [measure(urls, meters, clients, args.rounds, body, idle) for clients in levels]
        orchestrator_pid = int(inspect(stack.compose("ps", "-q", "orchestrator").stdout.strip(), "{{.State.Pid}}"))
        memory = rss_after_requests(stack.url, {"gateway": gateway_pid, "orchestrator": orchestrator_pid},
                                    args.requests)
    finally:
        for process in side:
            process.kill()
        stack.force_down()
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, args, notes, memory)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "memory": memory, "notes": notes}, indent=2))


def rss_mb(pid: int) -> float:
    """Resident memory of a container's main process (the service itself), MB."""
    line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def rss_after_requests(url: str, pids: dict[str, int], count: int) -> dict:
    """RSS of each service before and after ``count`` short requests through the gateway (32 at a time)."""
    before = {name: rss_mb(pid) for name, pid in pids.items()}
    body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).encode()

    async def run() -> None:
        left = iter(range(count))

        async def worker() -> None:
            for _ in left:
                response = await upstream.send(url, "POST", "/v1/chat/completions",
                                               [(b"content-type", b"application/json")], body)
                while await response.next_piece() is not None:
                    pass
                response.close()
        await asyncio.gather(*(worker() for _ in range(32)))
    started = time.perf_counter()
    asyncio.run(run())
    took = time.perf_counter() - started
    return {"requests": count, "seconds": took,
            "rss_mb": {name: {"before": before[name], "after": rss_mb(pid)} for name, pid in pids.items()}}


def idle_rate(meter: Meter, seconds: float = 5.0) -> float:
    """CPU seconds per second a proxy spends with no traffic (the gateway's healthchecks, NVML reads):
    part of its CPU per token below, shown apart so the relay's own cost can be read."""
    before = meter.read()
    time.sleep(seconds)
    return (meter.read() - before) / seconds


def measure(urls: dict[str, str], meters: dict[str, Meter], clients: int, rounds: int, body: bytes,
            idle: dict[str, float]) -> dict:
    paths = list(urls)
    tps: dict[str, list[float]] = {p: [] for p in paths}
    ttfts: dict[str, list[float]] = {p: [] for p in paths}
    tokens = {p: 0 for p in paths}
    cpu = {p: 0.0 for p in meters}
    metered_s = {p: 0.0 for p in meters}
    for rnd in range(rounds):
        order = paths[rnd % len(paths):] + paths[:rnd % len(paths)]  # each path takes each position in turn
        for path in order:
            before, since = (meters[path].read() if path in meters else 0.0), time.perf_counter()
            got, elapsed, firsts = asyncio.run(one_round(urls[path], clients, body))
            if path in meters:
                cpu[path] += meters[path].read() - before
                metered_s[path] += time.perf_counter() - since
            tps[path].append(got / elapsed)
            ttfts[path] += firsts
            tokens[path] += got
    direct_ttft = statistics.median(ttfts["direct"])
    result = {"clients": clients, "direct_tps": statistics.median(tps["direct"]), "paths": {}}
    for path in paths:
        ratios = [t / d for t, d in zip(tps[path], tps["direct"])]  # same round, same machine state
        result["paths"][path] = {
            "tps": statistics.median(tps[path]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "added_ttft_ms": (statistics.median(ttfts[path]) - direct_ttft) * 1000,
            "cpu_us_per_token": cpu[path] / tokens[path] * 1e6 if path in meters and tokens[path] else None,
            # what it would have spent anyway, over the same seconds, with no traffic
            "idle_us_per_token": idle[path] * metered_s[path] / tokens[path] * 1e6
            if path in meters and tokens[path] else None,
        }
    return result


def print_table(rows: list[dict], args, notes: list[str], memory: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    for row in rows:
        table = Table(title=f"As deployed: {row['clients']} client(s) x {args.tokens} tokens, {args.rounds} "
                            f"interleaved rounds; direct {row['direct_tps']:,.0f} tok/s (median)")
        for column in ("path", "tok/s", "ratio to direct (median)", "min-max over rounds", "added TTFT p50",
                       "proxy CPU / token", "of which idle"):
            table.add_column(column, justify="right" if column != "path" else "left")
        for path, fig in row["paths"].items():
            cpu = "—" if fig["cpu_us_per_token"] is None else f"{fig['cpu_us_per_token']:.0f} µs"
            idle = "—" if fig["idle_us_per_token"] is None else f"{fig['idle_us_per_token']:.0f} µs"
            table.add_row(path, f"{fig['tps']:,.0f}", f"{fig['ratio']:.3f}",
                          f"{fig['ratio_min']:.2f}–{fig['ratio_max']:.2f}", f"{fig['added_ttft_ms']:+.1f} ms", cpu,
                          idle)
        console.print(table)
    for name, fig in memory["rss_mb"].items():
        console.print(f"{name} RSS: {fig['before']:.0f} MB before, {fig['after']:.0f} MB after "
                      f"{memory['requests']:,} requests ({memory['requests'] / memory['seconds']:,.0f} req/s)")
    for note in notes:
        console.print(f"note: {note}")


if __name__ == "__main__":
    main()
