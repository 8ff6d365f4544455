"""Swaps that do not forget: time to first token of a conversation's next turn right after its model
was swapped out and back in, with its KV cache restored, without (the file removed first: what
every swap did before), and on a model that never left. Real stack (`make up`), CPU.

Two apps alternate between two models of one swap group (A on `a`, B on `b`: loading one stops
the other, which saves its slots first); a third model `c`, outside the group, never leaves.
For each history size (tokens of conversation so far) and each round, in a rotating order:

* restored: prime the conversation on `a`, load `b` (a stops: saved), load `a` again, ask the
  next turn: the gateway restores the slot before it forwards the turn;
* without:  the same on a second stack with saving off (`LLAMADOCK_KV_CACHE_MAX_MB=0`): every
  swap as it was before (the two stacks run side by side; one request at a time in all);
* never left: prime on `c`, load `b` (c stays), ask the next turn on `c`.

Loads are admin loads, so the figure is the turn's own TTFT (the restore included), not the
model's start. The model: random weights shaped like the deployed bench's `small` (a CPU
processes prompts at rates a GPU has for real models), ctx 8192, one slot.

    .venv/bin/python bench/kv_swap.py --rounds 3 --history 1000,2000,4000
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.llama import ensure_llama_server, make_tiny_model, vocab_path  # noqa: E402
from support.stack import Stack, local_llama_image  # noqa: E402

SMALL = {"n_embd": 384, "n_layers": 6, "n_head": 6, "n_head_kv": 2, "n_ff": 1024}  # bench/deployed.py's `small`
WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex every box of "
         "frozen jam and plums").split()
MODELS = {name: {"model": "m.gguf", "ctx_size": 8192, "parallel": 1, **extra}
          for name, extra in (("a", {"swap_group": "g"}), ("b", {"swap_group": "g"}), ("c", {}))}


def history(tokens: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    # about 1.3 tokens a word with this tokenizer; the prime's own prompt_n is what is reported
    return [{"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(int(tokens / 1.3)))}]


def turn(stack: Stack, model: str, messages: list[dict]) -> tuple[float, dict]:
    """Stream one turn; (seconds to the first content token, llama-server's timings)."""
    started = time.perf_counter()
    first, timings = None, {}
    with httpx.stream("POST", stack.url + "/v1/chat/completions", timeout=600, json={
            "model": model, "messages": messages, "max_tokens": 4, "temperature": 0, "stream": True,
            "timings_per_token": False}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            delta = (event.get("choices") or [{}])[0].get("delta") or {}
            if first is None and delta.get("content"):
                first = time.perf_counter() - started
            timings = event.get("timings") or timings
    return (first if first is not None else time.perf_counter() - started), timings


def answer_of(stack: Stack, model: str, messages: list[dict]) -> tuple[list[dict], int]:
    """Prime: the conversation so far is processed on ``model``; the next turn's messages."""
    response = httpx.post(stack.url + "/v1/chat/completions", timeout=600, json={
        "model": model, "messages": messages, "max_tokens": 8, "temperature": 0})
    response.raise_for_status()
    body = response.json()
    return messages + [{"role": "assistant", "content": body["choices"][0]["message"]["content"]},
                       {"role": "user", "content": "and then what happened?"}], body["timings"]["prompt_n"]


def load(stack: Stack, model: str) -> None:
    stack.admin.post(f"/admin/models/{model}/load").raise_for_status()


def one(stack: Stack, condition: str, tokens: int, seed: int) -> dict:
    model = "c" if condition == "never left" else "a"
    load(stack, model)
    messages, primed = answer_of(stack, model, history(tokens, seed))
    load(stack, "b")  # a swap for a (saved first where saving is on); c stays
    load(stack, model)
    ttft, timings = turn(stack, model, messages)
    return {"condition": condition, "history": tokens, "history_tokens": primed, "ttft_s": ttft,
            "cache_n": timings.get("cache_n"), "prompt_n": timings.get("prompt_n")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", default="1000,2000,4000", help="tokens of history, comma-separated")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = [int(s) for s in args.history.split(",")]
    conditions = ["restored", "without", "never left"]

    binary = ensure_llama_server()
    image = local_llama_image()
    stacks = {"restored": Stack(Path(tempfile.mkdtemp(prefix="llamadock-bench-kv-")), llama_image=image,
                                env={"LLAMADOCK_MIN_RESIDENCY_S": "0"}),
              "without": Stack(Path(tempfile.mkdtemp(prefix="llamadock-bench-nokv-")), llama_image=image,
                               env={"LLAMADOCK_MIN_RESIDENCY_S": "0", "LLAMADOCK_KV_CACHE_MAX_MB": "0"})}
    stacks["never left"] = stacks["restored"]
    for stack in (stacks["restored"], stacks["without"]):
        make_tiny_model(stack.models / "m.gguf", name="m", seed=4, vocab=vocab_path(binary), **SMALL)
        (stack.config / "models.yaml").write_text(yaml.safe_dump({"models": MODELS}))
    rows: list[dict] = []
    try:
        for name in ("restored", "without"):
            stacks[name].run("make", "up")
            load(stacks[name], "c")
            one(stacks[name], name, 200, seed=0)  # warm up: the first start of each model, the figures
        for r in range(args.rounds):
            for tokens in sizes:
                order = conditions[r % 3:] + conditions[:r % 3]  # interleaved, rotating
                for condition in order:
                    # the same conversation in each condition of a round: the ratios compare like with like
                    row = one(stacks[condition], condition, tokens, seed=100_000 * (r + 1) + tokens) | {"round": r}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        metrics = httpx.get(stacks["restored"].url + "/metrics").text
    finally:
        for name in ("restored", "without"):
            stacks[name].force_down()
    print_table(rows, sizes, args.rounds)
    lookups = [line for line in metrics.splitlines() if line.startswith("llamadock_kv_cache_lookups_total")]
    print("\n".join(lookups))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def print_table(rows: list[dict], sizes: list[int], rounds: int) -> None:
    print(f"\nTTFT of the turn after a swap, CPU, {rounds} interleaved rounds (median, min–max over rounds)\n")
    print("| prompt of the turn (tokens) | never left | restored | without restore | restored / never left "
          "| without / never left | restored / without |")
    print("|---|---|---|---|---|---|---|")
    for tokens in sizes:
        by = {c: [r for r in rows if r["history"] == tokens and r["condition"] == c]
              for c in ("never left", "restored", "without")}
        per_round = {c: {r["round"]: r["ttft_s"] for r in by[c]} for c in by}
        ratio = lambda a, b: [per_round[a][i] / per_round[b][i] for i in per_round[a] if i in per_round[b]]  # noqa: E731
        # the turn's whole prompt: what the server without a restore processed
        shown = statistics.median(r["prompt_n"] for r in by["without"])
        print(f"| {shown:.0f} | " + " | ".join(
            f"{statistics.median(r['ttft_s'] for r in by[c]) * 1000:.0f} ms" for c in by) + " | "
            + " | ".join(_spread(ratio(a, b)) for a, b in (("restored", "never left"), ("without", "never left"),
                                                           ("restored", "without"))) + " |")


if __name__ == "__main__":
    main()
