"""Scheduling on the real stack: real containers, tiny models, and a memory budget
(no GPU here, so the budget stands in for VRAM; each model declares its `memory`).

Budget 350 MiB; every model needs 100 MiB, except `huge`. `pinned` is preloaded.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil

import httpx
import pytest
import yaml

from support.stack import Stack, local_llama_image, require_docker, wait_for

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
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    stack = Stack(tmp_path_factory.mktemp("sched"), llama_image=local_llama_image(), env={
        "LLAMADOCK_MEMORY_BUDGET": "350MiB", "LLAMADOCK_QUEUE_TIMEOUT_S": "60", "LLAMADOCK_KEEPALIVE_S": "0.2"})
    shutil.copy(tiny_models["tiny-a"], stack.models / "m.gguf")
    (stack.config / "models.yaml").write_text(yaml.safe_dump({"models": MODELS}))
    try:
        stack.run("make", "up")
        yield stack
    finally:
        stack.force_down()


def chat(stack: Stack, model: str, max_tokens: int = 4, timeout: float = 120) -> httpx.Response:
    return httpx.post(stack.url + "/v1/chat/completions", timeout=timeout, json={
        "model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]})


def running(stack: Stack) -> set[str]:
    return {c["Config"]["Labels"]["io.llamadock.model"] for c in stack.model_containers() if c["State"]["Running"]}


def states(stack: Stack) -> dict[str, str]:
    return {m["id"]: m["state"] for m in httpx.get(stack.url + "/v1/models", timeout=10).json()["data"]}


def metric(stack: Stack, name: str, model: str) -> float:
    text = httpx.get(stack.url + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and f'model="{model}"' in line)


def test_only_preloaded_models_start_with_the_stack(stack):
    wait_for(lambda: states(stack).get("pinned") == "ready", 60, "the preloaded model")
    assert running(stack) == {"pinned"}
    assert states(stack)["a"] == "stopped"


def test_a_request_starts_its_model_once_for_many_clients(stack):
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: chat(stack, "a"), range(6)))
    assert [r.status_code for r in answers] == [200] * 6
    assert len([c for c in stack.model_containers() if c["Config"]["Labels"]["io.llamadock.model"] == "a"]) == 1
    assert metric(stack, "llamadock_model_start_seconds_count", "a") == 1


def test_a_streaming_client_gets_keepalives_while_its_model_starts(stack):
    with httpx.stream("POST", stack.url + "/v1/chat/completions", timeout=120, json={
            "model": "b", "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status_code == 200
        body = r.read().decode("utf-8", "replace")
    assert body.startswith(": llamadock: waiting for model 'b'")
    assert "data: [DONE]" in body


def test_lru_idle_model_is_evicted_for_a_third_and_pinned_survives(stack):
    assert chat(stack, "b").status_code == 200  # b used after a: a is the least recently used
    assert running(stack) >= {"pinned", "a", "b"}
    assert chat(stack, "c").status_code == 200
    wait_for(lambda: "a" not in running(stack), 30, "a to be stopped")
    assert running(stack) >= {"pinned", "b", "c"} and "a" not in running(stack)
    assert states(stack)["a"] == "stopped"


def test_503_when_it_can_never_fit(stack):
    refused = chat(stack, "huge")
    assert refused.status_code == 503
    message = refused.json()["error"]["message"]
    assert "1.00 GiB" in message and "pinned" in message  # what it needs, and what is loaded
    assert "huge" not in running(stack)


def test_idle_model_is_unloaded_after_its_ttl_and_comes_back(stack):
    assert chat(stack, "brief").status_code == 200
    wait_for(lambda: states(stack)["brief"] == "stopped", 30, "brief unloaded after its 2 s ttl")
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
    assert refused[0].headers["retry-after"] == "1"
    error = refused[0].json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "narrow" in error["message"]
    json.dumps(error)


def test_status_shows_the_budget_and_who_holds_it(stack):
    view = httpx.get(stack.url + "/status", timeout=10).json()["scheduler"]
    budget = view["pools"]["budget"]
    assert budget["capacity_bytes"] == 350 * 2**20
    holders = {name for name, m in view["models"].items() if m["phase"] in ("ready", "starting", "stopping")}
    assert budget["models_bytes"] == sum(view["models"][n]["need_bytes"].get("budget", 0) for n in holders)
    assert view["models"]["pinned"]["pinned"] is True and view["models"]["narrow"]["limit"] == 1
