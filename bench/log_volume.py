"""How much the stack's own logs grow: bytes of `docker compose logs` for the gateway and the
orchestrator per 1,000 requests to one model (half streamed, half not), and per minute idle
with that model ready. The model container's own log (kept by Docker, rotated) is shown beside.

    .venv/bin/python bench/log_volume.py [--requests 1000] [--idle-s 30] [--repo PATH]

``--repo``: run another checkout's stack (e.g. an export of an older commit) to compare; its
app image is built under ``--image``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.llama import ensure_llama_server, make_tiny_model, vocab_path  # noqa: E402
from support.net import free_port  # noqa: E402
from support.stack import Stack, local_llama_image  # noqa: E402
from support.waiting import wait_until  # noqa: E402


def log_bytes(stack: Stack, *services: str) -> int:
    return len(stack.compose("logs", "--no-color", *services).stdout.encode())


def container_log_bytes(name: str) -> int:
    out = subprocess.run(["docker", "logs", name], capture_output=True)
    return len(out.stdout) + len(out.stderr)


def one_request(url: str, i: int) -> int:
    body = {"model": "tiny", "messages": [{"role": "user", "content": f"Request {i}: say something."}],
            "max_tokens": 16, "stream": i % 2 == 0}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as response:
        response.read()
        return response.status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--image", default=None, help="app image tag for this run (LLAMADOCK_APP_IMAGE)")
    args = parser.parse_args()

    binary = ensure_llama_server()
    with tempfile.TemporaryDirectory(prefix="llamadock-logvol-") as tmp:
        root = Path(tmp)
        gguf = make_tiny_model(root / "tiny.gguf", name="tiny", seed=1, vocab=vocab_path(binary))
        env = {"LLAMADOCK_ORCHESTRATOR_HOST_PORT": str(free_port())}  # an older stack publishes one
        if args.image:
            env["LLAMADOCK_APP_IMAGE"] = args.image
        stack = Stack(root / "stack", llama_image=local_llama_image(), env=env, repo=args.repo.resolve())
        shutil.copy(gguf, stack.models / "tiny.gguf")
        try:
            stack.run("make", "up")
            stack.admin.post("/admin/models", json={"name": "tiny", "model": "tiny.gguf", "parallel": 2,
                                                    "ctx_size": 2048}).raise_for_status()
            model = f"{stack.project}-model-tiny"
            wait_until(lambda: one_request(stack.url, 1) == 200, 60, "the model to answer")
            after_load = {s: log_bytes(stack, s) for s in ("gateway", "orchestrator")}
            model_before = container_log_bytes(model)

            began = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                codes = list(pool.map(lambda i: one_request(stack.url, i), range(args.requests)))
            took = time.monotonic() - began
            assert codes.count(200) == args.requests, f"not all answered 200: {sorted(set(codes))}"
            served = {s: log_bytes(stack, s) for s in ("gateway", "orchestrator")}
            model_after = container_log_bytes(model)

            time.sleep(args.idle_s)  # the measurement itself: what the logs grow by with nothing to do
            idle = {s: log_bytes(stack, s) for s in ("gateway", "orchestrator")}

            per_k = 1000 / args.requests
            print(f"repo {args.repo}  {args.requests} requests in {took:.1f} s")
            print(f"{'':<14}{'per 1,000 requests':>20}{'per minute idle':>18}")
            for service in ("gateway", "orchestrator"):
                print(f"{service:<14}{(served[service] - after_load[service]) * per_k:>18,.0f} B"
                      f"{(idle[service] - served[service]) * 60 / args.idle_s:>16,.0f} B")
            total = sum(served[s] - after_load[s] for s in served) * per_k
            total_idle = sum(idle[s] - served[s] for s in idle) * 60 / args.idle_s
            print(f"{'both':<14}{total:>18,.0f} B{total_idle:>16,.0f} B")
            print(f"{'model (own)':<14}{(model_after - model_before) * per_k:>18,.0f} B")
        finally:
            stack.force_down()


if __name__ == "__main__":
    main()
