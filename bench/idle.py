"""What an idle stack costs: CPU of the gateway's and the orchestrator's containers (from their
cgroups) over a quiet window, with two models ready and no traffic. On a laptop that is battery
and fan; the target is at most 0.5 % of one core each. Also: a state change is still seen fast
(a model container killed -> the gateway's /v1/models says so).

    .venv/bin/python bench/idle.py --seconds 10
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from contract.status import ModelList  # noqa: E402
from deployed import cgroup_cpu_s  # noqa: E402
from support.llama import ensure_llama_server, make_tiny_model, vocab_path  # noqa: E402
from support.stack import Stack, running_stack  # noqa: E402
from support.waiting import wait_until  # noqa: E402


def service_pid(stack: Stack, service: str) -> int:
    cid = stack.compose("ps", "-q", service).stdout.strip()
    return int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", cid], capture_output=True,
                              text=True, check=True).stdout)


def states(stack: Stack) -> dict[str, str]:
    served = ModelList.model_validate_json(httpx.get(stack.url + "/v1/models", timeout=10).content)
    return {m.id: m.state for m in served.data}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    binary = ensure_llama_server()
    root = Path(tempfile.mkdtemp(prefix="llamadock-idle-"))
    make_tiny_model(root / "m.gguf", name="m", seed=4, vocab=vocab_path(binary))
    catalog = {"one": {"model": "m.gguf", "preload": True}, "two": {"model": "m.gguf", "preload": True}}
    with running_stack(root / "stack", root / "m.gguf", as_file="m.gguf", catalog=catalog) as stack:
        wait_until(lambda: states(stack) == {"one": "ready", "two": "ready"}, 120, "both models ready")
        time.sleep(3)  # let start-up work (first healthchecks, the gateway's first reads) pass
        pids = {s: service_pid(stack, s) for s in ("gateway", "orchestrator")}
        shares: dict[str, list[float]] = {s: [] for s in pids}
        for _ in range(args.windows):
            before = {s: cgroup_cpu_s(p) for s, p in pids.items()}
            started = time.monotonic()
            time.sleep(args.seconds)  # the measurement window itself: nothing to wait for
            took = time.monotonic() - started
            for s, p in pids.items():
                shares[s].append(100 * (cgroup_cpu_s(p) - before[s]) / took)
        killed = time.monotonic()
        subprocess.run(["docker", "kill", f"{stack.project}-model-two"], check=True, capture_output=True)
        while states(stack)["two"] == "ready":
            time.sleep(0.005)
        seen_ms = 1000 * (time.monotonic() - killed)
    print(f"idle, two models ready, {args.windows} windows of {args.seconds:g} s (CPU % of one core):")
    for s, values in shares.items():
        print(f"  {s:<13} median {sorted(values)[len(values) // 2]:.2f} %  (min {min(values):.2f}, "
              f"max {max(values):.2f})")
    print(f"  a killed model seen by the gateway after {seen_ms:.0f} ms (docker kill included)")


if __name__ == "__main__":
    main()
