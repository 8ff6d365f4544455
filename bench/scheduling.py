"""Scheduling costs on the real stack (tiny model, CPU), interleaved rounds, medians:

* cold start through the gateway (the model is stopped; the request starts it) vs a
  warm request to the same model;
* swap (one swap group: the gateway stops one model and starts the other) vs the
  same done by hand (docker stop + docker start + poll /health);
* readiness lag: from the model's /health turning ok to the gateway serving the
  waiting request, minus a warm request's own time.

    .venv/bin/python bench/scheduling.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from contract.status import ModelList  # noqa: E402
from support.llama import ensure_llama_server, make_tiny_model, vocab_path  # noqa: E402
from support.stack import Stack, local_llama_image  # noqa: E402

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def ask(stack: Stack, model: str) -> float:
    started = time.perf_counter()
    r = httpx.post(stack.url + "/v1/chat/completions", json={"model": model, **CHAT}, timeout=120)
    r.raise_for_status()
    return time.perf_counter() - started


def container_ip(stack: Stack, model: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                           f"{stack.project}-model-{model}"], capture_output=True, text=True).stdout.strip()


def stop_model(stack: Stack, model: str) -> None:
    stack.run("docker", "stop", "-t", "10", f"{stack.project}-model-{model}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        served = ModelList.model_validate_json(httpx.get(stack.url + "/v1/models").content)
        states = {m.id: m.state for m in served.data}
        if states[model] != "ready":
            return
        time.sleep(0.02)


def cold_with_lag(stack: Stack, model: str) -> tuple[float, float]:
    """(cold request seconds, seconds from the model's /health ok to the answer)."""
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        ip = ""
        while not done.is_set():
            ip = ip or container_ip(stack, model)
            try:
                if ip and httpx.get(f"http://{ip}:8080/health", timeout=1).status_code == 200:
                    seen["health"] = time.perf_counter()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    started = time.perf_counter()
    watcher.start()
    r = httpx.post(stack.url + "/v1/chat/completions", json={"model": model, **CHAT}, timeout=120)
    ended = time.perf_counter()
    done.set()
    watcher.join()
    r.raise_for_status()
    return ended - started, ended - seen.get("health", ended)


def swap_by_hand(stack: Stack, stop: str, start: str) -> float:
    started = time.perf_counter()
    stack.run("docker", "stop", "-t", "10", f"{stack.project}-model-{stop}")
    stack.run("docker", "start", f"{stack.project}-model-{start}")
    ip = container_ip(stack, start)
    while True:
        try:
            if httpx.get(f"http://{ip}:8080/health", timeout=1).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    binary = ensure_llama_server()
    stack = Stack(Path(tempfile.mkdtemp(prefix="llamadock-bench-")), llama_image=local_llama_image())
    make_tiny_model(stack.models / "m.gguf", name="m", seed=4, vocab=vocab_path(binary))
    (stack.config / "models.yaml").write_text(yaml.safe_dump({"models": {
        "cold": {"model": "m.gguf"},
        "s1": {"model": "m.gguf", "swap_group": "g"},
        "s2": {"model": "m.gguf", "swap_group": "g"},
    }}))
    cold, warm, lag, swap, by_hand = [], [], [], [], []
    try:
        stack.run("make", "up")
        ask(stack, "cold"), ask(stack, "s1"), ask(stack, "s2")  # every container exists once
        for i in range(args.rounds):
            stop_model(stack, "cold")
            total, gap = cold_with_lag(stack, "cold")
            cold.append(total)
            warm.append(min(ask(stack, "cold") for _ in range(5)))
            lag.append(gap - warm[-1])
            # Swap: s2 is loaded (the last one asked); ask s1 through the gateway, or swap by hand.
            for kind in (("gateway", "hand") if i % 2 == 0 else ("hand", "gateway")):
                if kind == "gateway":
                    ask(stack, "s2")
                    swap.append(ask(stack, "s1") - warm[-1])
                    ask(stack, "s2")  # back, for the next round
                else:
                    by_hand.append(swap_by_hand(stack, "s2", "s1"))
                    stop_model(stack, "s1")
                    ask(stack, "s2")
    finally:
        stack.force_down()

    med = statistics.median
    print(f"\nScheduling, median of {args.rounds} rounds (tiny model, CPU)\n")
    print(f"| {'what':<58} | {'seconds':>8} |\n|{'-' * 60}|{'-' * 10}|")
    for what, value in (("cold request (model stopped; the request starts it)", med(cold)),
                        ("warm request (model ready)", med(warm)),
                        ("swap through the gateway (stop one, start the other)", med(swap)),
                        ("the same swap by hand (docker stop + start + /health)", med(by_hand)),
                        ("readiness lag: model /health ok -> request served", med(lag))):
        print(f"| {what:<58} | {value:8.3f} |")
    print(f"\ncold / warm: {med(cold) / med(warm):.1f}x;  swap gateway / by hand: {med(swap) / med(by_hand):.2f}")
    print({"cold": cold, "warm": warm, "lag": lag, "swap": swap, "by_hand": by_hand})


if __name__ == "__main__":
    main()
