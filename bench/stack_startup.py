"""Stack start-up costs: how long until a model added to the stack answers, against
starting the same llama-server by hand; how long the gateway lags behind the
model's own /health; and `make up` on a warm machine.

Each round, interleaved so machine noise hits both alike:
  direct   start llama-server as a process (the host build), poll /health every 20 ms
  stack    POST /admin/models through the gateway; meanwhile poll the model's /health
           (by container IP) and a real chat request through the gateway every 5 ms

    make bench        # or: .venv/bin/python bench/stack_startup.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.llama import LlamaServer, ensure_llama_server, make_tiny_model, vocab_path  # noqa: E402
from support.stack import Stack, local_llama_image  # noqa: E402

POLL_S = 0.005


def first_ok(probe, stop: threading.Event, out: dict, key: str) -> None:
    while not stop.is_set():
        try:
            if probe():
                out[key] = time.perf_counter()
                return
        except httpx.HTTPError:
            pass
        time.sleep(POLL_S)


def direct_start(binary: Path, model: Path, logs: Path) -> float:
    server = LlamaServer(binary, model, alias="bench", parallel=1, log_dir=logs)
    started = time.perf_counter()
    server.start(timeout=60)  # polls /health every 20 ms
    took = time.perf_counter() - started
    server.stop()
    return took


def stack_start(stack: Stack, name: str) -> tuple[float, float, float]:
    """(add -> routable, add -> model /health ok, /health ok -> routable), seconds."""
    seen: dict[str, float] = {}
    stop = threading.Event()
    chat = {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    container = f"{stack.project}-model-{name}"

    address: list[str] = []

    def model_health() -> bool:
        if not address:  # docker inspect costs ~20 ms: once, then only the GET is polled
            ip = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                 container], capture_output=True, text=True).stdout.strip()
            address[:] = [ip] if ip else []
        return bool(address) and httpx.get(f"http://{address[0]}:8080/health", timeout=1).status_code == 200

    def routable() -> bool:
        return httpx.post(stack.url + "/v1/chat/completions", json=chat, timeout=5).status_code == 200

    threads = [threading.Thread(target=first_ok, args=(p, stop, seen, k)) for p, k in
               ((model_health, "health"), (routable, "routable"))]
    started = time.perf_counter()
    for t in threads:
        t.start()
    response = stack.admin.post("/admin/models", json={"name": name, "model": "bench.gguf", "parallel": 1})
    response.raise_for_status()
    for t in threads:
        t.join(60)
    stop.set()
    stack.admin.delete(f"/admin/models/{name}").raise_for_status()
    return seen["routable"] - started, seen["health"] - started, seen["routable"] - seen["health"]


def make_up_time(stack: Stack) -> float:
    stack.run("make", "down")
    started = time.perf_counter()
    stack.run("make", "up")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    binary = ensure_llama_server()
    work = Path(tempfile.mkdtemp(prefix="llamadock-bench-"))
    stack = Stack(work / "stack", llama_image=local_llama_image())
    model = make_tiny_model(stack.models / "bench.gguf", name="bench", seed=3, vocab=vocab_path(binary))
    direct, via_stack, to_health, lag, up = [], [], [], [], []
    try:
        stack.run("make", "up")
        for i in range(args.rounds):
            order = ("direct", "stack") if i % 2 == 0 else ("stack", "direct")
            for kind in order:
                if kind == "direct":
                    direct.append(direct_start(binary, model, work))
                else:
                    total, health, gap = stack_start(stack, f"bench{i}")
                    via_stack.append(total), to_health.append(health), lag.append(gap)
        for _ in range(max(2, args.rounds // 2)):
            up.append(make_up_time(stack))
    finally:
        stack.force_down()
        shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    rows = [
        ("llama-server started by hand, to /health ok", med(direct)),
        ("add through the gateway, to model's /health ok", med(to_health)),
        ("add through the gateway, to first routed answer", med(via_stack)),
        ("model /health ok -> routed through the gateway", med(lag)),
        ("`make up` on a warm machine (images built)", med(up)),
    ]
    print(f"\nStack start-up, median of {args.rounds} interleaved rounds (tiny model, CPU)\n")
    print(f"| {'what':<52} | {'seconds':>8} |")
    print(f"|{'-' * 54}|{'-' * 10}|")
    for what, seconds in rows:
        print(f"| {what:<52} | {seconds:8.3f} |")
    print(f"\nadd -> routable vs direct start: ratio {med(via_stack) / med(direct):.2f}, "
          f"difference {med(via_stack) - med(direct):+.3f} s")
    print(json.dumps({"direct": direct, "stack": via_stack, "health": to_health, "lag": lag, "make_up": up}))


if __name__ == "__main__":
    main()
