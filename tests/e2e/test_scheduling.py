"""Scheduling on the real stack: real containers, tiny models, and a memory budget
(no GPU here, so the budget stands in for VRAM; each model declares its `memory`).

Budget 350 MiB; every model needs 100 MiB, except `huge` and the pairs that alternate.
`pinned` is preloaded.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import re
import time

import httpx
import openai
import pytest

from support.stack import Stack, require_docker, running_stack
from support.waiting import wait_until

require_docker()
pytestmark = pytest.mark.docker

MODELS = {
    "pinned": {"model": "m.gguf", "memory": "100MiB", "pinned": True, "preload": True},
    "a": {"model": "m.gguf", "memory": "100MiB"},
    "b": {"model": "m.gguf", "memory": "100MiB"},
    "c": {"model": "m.gguf", "memory": "100MiB"},
    "huge": {"model": "m.gguf", "memory": "1GiB"},
    "brief": {"model": "m.gguf", "memory": "10MiB", "ttl": 2},
    "swap1": {"model": "m.gguf", "memory": "10MiB", "swap_group": "g"},
    "swap2": {"model": "m.gguf", "memory": "10MiB", "swap_group": "g"},
    "narrow": {"model": "m.gguf", "memory": "10MiB", "parallel": 1, "max_queue": 2},
    # two pairs that cannot both fit (200 + 200 MiB > 350 - 100 pinned): with and without a residency
    "alt1": {"model": "m.gguf", "memory": "200MiB", "min_residency": 4},
    "alt2": {"model": "m.gguf", "memory": "200MiB", "min_residency": 4},
    "thrash1": {"model": "m.gguf", "memory": "200MiB", "min_residency": 0},
    "thrash2": {"model": "m.gguf", "memory": "200MiB", "min_residency": 0},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    env = {"LLAMADOCK_MEMORY_BUDGET": "350MiB", "LLAMADOCK_QUEUE_TIMEOUT_S": "60", "LLAMADOCK_KEEPALIVE_S": "0.2"}
    with running_stack(tmp_path_factory.mktemp("sched"), tiny_models["tiny-a"], as_file="m.gguf", catalog=MODELS,
                       env=env) as stack:
        yield stack


def chat(stack: Stack, model: str, max_tokens: int = 4, timeout: float = 120) -> httpx.Response:
    return httpx.post(stack.url + "/v1/chat/completions", timeout=timeout, json={
        "model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]})


def running(stack: Stack) -> set[str]:
    return {c["Config"]["Labels"]["io.llamadock.model"] for c in stack.model_containers() if c["State"]["Running"]}


def states(stack: Stack) -> dict[str, str]:
    return {m["id"]: m["state"] for m in httpx.get(stack.url + "/v1/models", timeout=10).json()["data"]}


def phase(stack: Stack, model: str) -> str:
    """The scheduler's phase: "stopped" once the stop is done (the listing says so as it begins)."""
    return httpx.get(stack.url + "/status", timeout=10).json()["scheduler"]["models"][model]["phase"]


def metric(stack: Stack, name: str, model: str) -> float:
    text = httpx.get(stack.url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and f'model="{model}"' in line)


def test_only_preloaded_models_start_with_the_stack(stack):
    wait_until(lambda: states(stack).get("pinned") == "ready", 60, "the preloaded model")
    assert running(stack) == {"pinned"}
    assert states(stack)["a"] == "stopped"


def test_a_request_starts_its_model_once_for_many_clients(stack):
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: chat(stack, "a"), range(6)))
    assert [r.status_code for r in answers] == [200] * 6
    assert len([c for c in stack.model_containers() if c["Config"]["Labels"]["io.llamadock.model"] == "a"]) == 1
    assert metric(stack, "llamadock_model_start_seconds_count", "a") == 1
    # The activity record tells each one's wait for the start from its wait for a slot.
    records = stack.admin.get("/admin/activity", params={"model": "a"}).json()["records"]
    assert len(records) == 6 and all(r["status"] == 200 and r["tokens_out"] == 4 for r in records)
    assert all(r["load_wait_s"] > 0 for r in records)  # all six arrived while it was stopped
    assert all(r["load_wait_s"] + r["queue_wait_s"] < r["duration_s"] for r in records)


def test_a_streaming_client_is_told_its_model_is_loading(stack):
    assert states(stack)["b"] == "stopped"
    with httpx.stream("POST", stack.url + "/v1/chat/completions", timeout=120, json={
            "model": "b", "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status_code == 200
        body = r.read().decode("utf-8", "replace")
    assert re.match(r": loading b \d+\.\d s\n\n", body), body[:200]
    loading = [float(s) for s in re.findall(r"^: loading b (\d+\.\d) s$", body, re.M)]
    assert loading == sorted(loading)  # the time since the start began, counting up
    assert body.index(": loading b") < body.index("data: ") and "data: [DONE]" in body


def test_a_streaming_client_behind_a_busy_slot_is_told_its_place(stack):
    assert chat(stack, "narrow").status_code == 200  # loaded: the wait below is for its one slot
    with httpx.stream("POST", stack.url + "/v1/chat/completions", timeout=120, json={
            "model": "narrow", "stream": True, "max_tokens": 3500, "ignore_eos": True,
            "messages": [{"role": "user", "content": "hi"}]}) as busy:
        lines = busy.iter_lines()  # kept: a dropped iterator would close the stream, and free the slot
        for line in lines:  # until it is answering: from then on it holds the one slot for a while
            if line.startswith("data: "):
                break
        with httpx.stream("POST", stack.url + "/v1/chat/completions", timeout=120, json={
                "model": "narrow", "stream": True, "max_tokens": 4,
                "messages": [{"role": "user", "content": "hi"}]}) as second:
            told = second.iter_lines()
            first = next(told)
            busy.close()  # its client goes: the slot frees and the second is let through
            rest = "\n".join(told)
    assert first == ": queued 1st", first
    assert "data: [DONE]" in rest and "error" not in rest
    second, busy = stack.admin.get("/admin/activity", params={"model": "narrow", "limit": 2}).json()["records"]
    assert busy["client_disconnected"] and busy["status"] == 499  # the client that went away, as such
    assert second["queue_wait_s"] > 0 and second["load_wait_s"] == 0  # it waited for the slot, not the model


def test_the_openai_client_sees_progress_as_reasoning_before_the_answer(stack):
    wait_until(lambda: phase(stack, "brief") == "stopped", 30, "brief unloaded after its 2 s ttl")
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="none", max_retries=0,
                           default_headers={"X-Llamadock-Progress": "reasoning"})
    reasoning, content, order = [], [], []
    for chunk in client.chat.completions.create(model="brief", stream=True, max_tokens=8,
                                                messages=[{"role": "user", "content": "hi"}]):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if (delta.model_extra or {}).get("reasoning_content"):
            reasoning.append(delta.model_extra["reasoning_content"])
            order.append("r")
        if delta.content:
            content.append(delta.content)
            order.append("c")
    assert any(text.startswith("Loading brief… ") for text in reasoning), reasoning
    assert "c" in order and order.index("c") > max(i for i, kind in enumerate(order) if kind == "r")


def test_without_opting_in_no_reasoning_is_added(stack):
    wait_until(lambda: phase(stack, "brief") == "stopped", 30, "brief unloaded after its 2 s ttl")
    with httpx.stream("POST", stack.url + "/v1/chat/completions", timeout=120, json={
            "model": "brief", "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}) as r:
        body = r.read().decode("utf-8", "replace")
    assert ": loading brief" in body and "reasoning_content" not in body


def test_lru_idle_model_is_evicted_for_a_third_and_pinned_survives(stack):
    assert chat(stack, "b").status_code == 200  # b used after a: a is the least recently used
    assert running(stack) >= {"pinned", "a", "b"}
    assert chat(stack, "c").status_code == 200
    wait_until(lambda: "a" not in running(stack), 30, "a to be stopped")
    assert running(stack) >= {"pinned", "b", "c"} and "a" not in running(stack)
    assert states(stack)["a"] == "stopped"


def test_503_when_it_can_never_fit(stack):
    refused = chat(stack, "huge")
    assert refused.status_code == 503
    message = refused.json()["error"]["message"]
    assert "1.0 GiB" in message and "pinned" in message  # what it needs, and what is loaded
    assert "huge" not in running(stack)


def test_idle_model_is_unloaded_after_its_ttl_and_comes_back(stack):
    assert chat(stack, "brief").status_code == 200
    wait_until(lambda: states(stack)["brief"] == "stopped", 30, "brief unloaded after its 2 s ttl")
    assert chat(stack, "brief").status_code == 200  # started again on demand


def test_swap_group_runs_one_at_a_time(stack):
    assert chat(stack, "swap1").status_code == 200
    assert chat(stack, "swap2").status_code == 200
    assert "swap2" in running(stack) and "swap1" not in running(stack)


def test_concurrency_limit_queues_then_429_and_every_request_is_answered(stack):
    assert chat(stack, "narrow").status_code == 200  # loaded: what follows measures the queue only
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda _: chat(stack, "narrow", max_tokens=300).status_code, range(12)))
    assert len(codes) == 12 and set(codes) <= {200, 429}  # every request answered, none hangs
    assert codes.count(429) >= 1 and codes.count(200) >= 3  # 1 running + 2 queued at least
    busy = chat(stack, "narrow")
    assert busy.status_code == 200
    assert metric(stack, "llamadock_rejected_requests_total", "narrow") == codes.count(429)
    assert 'llamadock_queue_depth{model="narrow"}' in httpx.get(stack.url + "/metrics", timeout=10).text


def test_429_is_openai_shaped_with_retry_after(stack):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: chat(stack, "narrow", max_tokens=300), range(8)))
    refused = [r for r in answers if r.status_code == 429]
    assert refused, [r.status_code for r in answers]
    error = refused[0].json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "narrow" in error["message"]
    # narrow has served requests: the wait is estimated from them, and Retry-After follows it.
    assert error["queue_length"] == 2 and error["estimated_wait_s"] > 0
    said = int(re.search(r"Estimated wait: (\d+) s\.", error["message"])[1])
    assert abs(said - error["estimated_wait_s"]) <= 1
    assert abs(int(refused[0].headers["retry-after"]) - max(1, math.ceil(error["estimated_wait_s"]))) <= 1
    json.dumps(error)


def test_status_shows_the_budget_and_who_holds_it(stack):
    view = httpx.get(stack.url + "/status", timeout=10).json()["scheduler"]
    budget = view["pools"]["budget"]
    assert budget["capacity_bytes"] == 350 * 2**20
    holders = {name for name, m in view["models"].items() if m["phase"] in ("ready", "starting", "stopping")}
    assert budget["models_bytes"] == sum(view["models"][n]["need_bytes"].get("budget", 0) for n in holders)
    assert view["models"]["pinned"]["pinned"] is True and view["models"]["narrow"]["limit"] == 1


def alternate(stack: Stack, first: str, second: str, each: int = 6) -> tuple[list[int], float, float]:
    """Two apps at once, one per model, each sending ``each`` requests one after another with a
    short pause: (status codes, starts of the two models, swaps of the two models) during it."""
    def counts():
        return (sum(metric(stack, "llamadock_model_start_seconds_count", m) for m in (first, second)),
                sum(metric(stack, "llamadock_swaps_total", m) for m in (first, second)))

    def app(model):
        codes = []
        for _ in range(each):
            codes.append(chat(stack, model).status_code)
            time.sleep(0.3)  # the app's own pace between requests, not a wait for the server
        return codes

    starts0, swaps0 = counts()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        codes = [c for codes in pool.map(app, (first, second)) for c in codes]
    starts, swaps = counts()
    return codes, starts - starts0, swaps - swaps0


def test_two_apps_alternating_between_models_that_cannot_both_fit_are_served_in_batches(stack):
    codes, starts_before, swaps_before = alternate(stack, "thrash1", "thrash2")
    assert codes == [200] * 12
    codes, starts, swaps = alternate(stack, "alt1", "alt2")
    print(f"\n12 requests, two models that cannot both fit: starts {starts_before:g} -> {starts:g}, "
          f"swaps {swaps_before:g} -> {swaps:g}")
    assert codes == [200] * 12  # every request answered
    assert starts < 6 and swaps < starts_before  # batches, not a start per request
    assert "alt1" not in running(stack) or "alt2" not in running(stack)  # never both
