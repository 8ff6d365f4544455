"""What the swarm's overlay costs a streamed token: the stack in swarm mode on a three-node swarm
(tests/support/dind.py: this engine as the manager, two Docker-in-Docker workers), one tiny model
served from the manager's own node and one the same from a worker, through the gateway's published
port as apps call it:

  near   gateway -> a model service on the manager's node (its task on the overlay, same host: no VXLAN)
  far    gateway -> a model service on node3, a Docker-in-Docker worker (the overlay's VXLAN between
         two engines' network namespaces on one machine: the encapsulation, not a real wire)

Both models are the same GGUF shape with a slot per client; rounds are interleaved (the order
alternates) so machine noise hits both alike. Reported: tokens/s of each, and far/near per round
(median, min-max). The nodes share this machine's cores, so a worker's llama-server competes with
the gateway for CPU as the manager's does.

    make bench          # or: .venv/bin/python bench/overlay.py --rounds 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from deployed import one_round  # noqa: E402  (the same load generator as the deployed bench)
from support.dind import MANAGER, multi_node_swarm  # noqa: E402
from support.llama import ensure_llama_server, make_tiny_model, vocab_path  # noqa: E402
from support.stack import Stack, local_llama_image  # noqa: E402

PATHS = {"near": MANAGER, "far": "node3"}


def add_on(stack: Stack, bed, name: str, hostname: str, slots: int) -> None:
    """Add ``name`` so Swarm can place it only on ``hostname``: the other nodes paused meanwhile (a
    paused node keeps its tasks but takes no new one), whatever the scheduler would choose."""
    target = bed.manager_hostname if hostname == MANAGER else hostname
    others = [h for h in bed.hostnames() if h != target]
    for other in others:
        subprocess.run(["docker", "node", "update", "--availability", "pause", other], check=True,
                       capture_output=True)
    try:
        stack.admin.post("/admin/models", json={"name": name, "model": "bench.gguf", "parallel": slots,
                                                "ctx_size": slots * 1024}).raise_for_status()
    finally:
        for other in others:
            subprocess.run(["docker", "node", "update", "--availability", "active", other], check=True,
                           capture_output=True)
    node = subprocess.run(["docker", "service", "ps", f"{stack.project}-model-{name}", "--filter",
                           "desired-state=running", "--format", "{{.Node}}"], capture_output=True, text=True,
                          check=True).stdout.split()
    assert node == [target], f"{name} runs on {node}, not {target}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    binary = ensure_llama_server()
    work = Path(tempfile.mkdtemp(prefix="llamadock-bench-overlay-"))
    overlay = f"llamadock-bench-{uuid.uuid4().hex[:8]}"
    stack = Stack(work / "stack", llama_image=local_llama_image(),
                  env={"LLAMADOCK_BACKEND": "swarm", "LLAMADOCK_SWARM_NETWORK": overlay})
    make_tiny_model(stack.models / "bench.gguf", name="bench", seed=1, vocab=vocab_path(binary))
    stack.compose("build")
    images = [stack.env["LLAMADOCK_LLAMA_IMAGE_CPU"], stack.env.get("LLAMADOCK_APP_IMAGE", "llamadock/app:dev")]
    tps: dict[str, list[float]] = {p: [] for p in PATHS}
    with multi_node_swarm(models=stack.models, overlay=overlay, images=images, project_prefix=stack.project,
                          memory_mb={MANAGER: 3072, "node2": 3072, "node3": 3072}) as bed:
        try:
            stack.run("make", "up")
            for path, hostname in PATHS.items():
                add_on(stack, bed, path, hostname, args.clients)

            def body(model: str) -> bytes:
                return json.dumps({"model": model, "messages": [{"role": "user", "content": "Tell me a story"}],
                                   "max_tokens": args.tokens, "ignore_eos": True, "stream": True}).encode()
            for path in PATHS:
                asyncio.run(one_round(stack.url, args.clients, body(path)))  # warm both
            for rnd in range(args.rounds):
                for path in (list(PATHS) if rnd % 2 == 0 else list(PATHS)[::-1]):
                    got, elapsed, _ = asyncio.run(one_round(stack.url, args.clients, body(path)))
                    assert got >= args.clients * args.tokens * 0.9, (path, got)
                    tps[path].append(got / elapsed)
        finally:
            stack.force_down()
    ratios = [f / n for f, n in zip(tps["far"], tps["near"])]
    print(f"\nOverlay: {args.clients} clients x {args.tokens} tokens streamed through the published port, "
          f"{args.rounds} interleaved rounds")
    print(f"{'model on':<38}{'tok/s (median)':>16}{'min-max':>18}")
    print(f"{'the manager node (near)':<38}{statistics.median(tps['near']):>16,.0f}"
          f"{min(tps['near']):>10,.0f}–{max(tps['near']):,.0f}")
    print(f"{'node3, over the overlay (far)':<38}{statistics.median(tps['far']):>16,.0f}"
          f"{min(tps['far']):>10,.0f}–{max(tps['far']):,.0f}")
    print(f"far / near per round: median {statistics.median(ratios):.3f}, min-max "
          f"{min(ratios):.2f}–{max(ratios):.2f}; bed bring-up {bed.timings['bring_up_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"tps": tps, "ratios": ratios, "timings": bed.timings}, indent=2))


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"took {time.monotonic() - started:.0f} s")
