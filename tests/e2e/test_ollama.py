"""The Ollama API and explicit load/unload on the real stack: the official `ollama` client against
real llama-server containers (tiny models), streamed and not; keep_alive from both APIs; the
/admin load and unload endpoints and the CLI that mirrors them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import ollama
import pytest

from support.stack import REPO, Stack, require_docker, running_stack
from support.waiting import wait_until

require_docker()
pytestmark = pytest.mark.docker

MODELS = {
    "talk": {"model": "m.gguf", "aliases": ["talker"], "ctx_size": 32768},  # room for a long answer
    "emb": {"model": "m.gguf", "args": ["--embeddings", "--pooling", "mean"]},
    "spare": {"model": "m.gguf", "ctx_size": 512},
}
GREETING = [{"role": "user", "content": "Say hello."}]
FIXED = {"temperature": 0, "seed": 1, "num_predict": 8}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    with running_stack(tmp_path_factory.mktemp("ollama"), tiny_models["tiny-a"], as_file="m.gguf", catalog=MODELS,
                       env={"LLAMADOCK_QUEUE_TIMEOUT_S": "60"}) as stack:
        yield stack


@pytest.fixture(scope="module")
def client(stack) -> ollama.Client:
    return ollama.Client(host=stack.url, timeout=120)


def state(stack: Stack, model: str) -> str:
    return next(m["state"] for m in httpx.get(stack.url + "/v1/models", timeout=10).json()["data"]
                if m["id"] == model)


def scheduled(stack: Stack, model: str) -> dict:
    return httpx.get(stack.url + "/status", timeout=10).json()["scheduler"]["models"][model]


def test_version_tags_and_show(client):
    assert client._client.get("/api/version").json()["version"]
    names = [m.model for m in client.list().models]
    assert sorted(names) == ["emb", "spare", "talk"]
    assert {m.details.format for m in client.list().models} == {"gguf"}
    shown = client.show("emb")
    assert "embedding" in shown.capabilities and "completion" in shown.capabilities
    assert client.show("talker:latest").modelinfo["llamadock.aliases"] == ["talker"]  # alias, Ollama's tag


def test_chat_not_streamed_then_streamed_say_the_same(client):
    whole = client.chat(model="talk", messages=GREETING, stream=False, options=FIXED)
    assert whole.done and whole.done_reason in ("stop", "length")
    assert whole.message.role == "assistant" and whole.message.content
    assert 0 < whole.eval_count <= 8 and whole.prompt_eval_count > 0
    assert whole.eval_duration > 0 and whole.total_duration >= whole.eval_duration

    parts = list(client.chat(model="talk", messages=GREETING, stream=True, options=FIXED))
    assert len(parts) > 2 and not any(p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count


def test_generate_not_streamed_and_streamed(client):
    whole = client.generate(model="talker", prompt="Once upon a time", stream=False, options=FIXED)
    assert whole.done and whole.response and whole.eval_count <= 8
    parts = list(client.generate(model="talker", prompt="Once upon a time", stream=True, options=FIXED))
    assert "".join(p.response for p in parts) == whole.response and parts[-1].done_reason in ("stop", "length")
    raw = client.generate(model="talk", prompt="1 2 3", raw=True, stream=False, options={"num_predict": 3})
    assert raw.done and raw.eval_count <= 3


def test_embed(client):
    answer = client.embed(model="emb", input=["one sentence", "another one"])
    assert len(answer.embeddings) == 2 and len(answer.embeddings[0]) > 8
    assert answer.embeddings[0] != answer.embeddings[1]
    single = client.embeddings(model="emb", prompt="one sentence")
    assert single.embedding == pytest.approx(answer.embeddings[0], abs=1e-4)


def test_ps_lists_what_runs(client, stack):
    client.chat(model="talk", messages=GREETING, stream=False, options={"num_predict": 1})
    loaded = {m.model: m for m in client.ps().models}
    assert "talk" in loaded and "spare" not in loaded
    assert loaded["talk"].expires_at.year >= 2300  # no ttl: kept until needed elsewhere


def test_errors_in_ollamas_shape(client, stack):
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="nope", messages=GREETING, stream=False)
    assert missing.value.status_code == 404 and "nope" in missing.value.error
    bad = httpx.post(stack.url + "/api/generate", timeout=10,
                     json={"model": "talk", "prompt": "x", "keep_alive": "soon"})
    assert bad.status_code == 400 and "keep_alive" in bad.json()["error"]
    assert httpx.post(stack.url + "/api/chat", content=b"{", timeout=10).status_code == 400


def test_empty_generate_loads_and_keep_alive_zero_unloads(client, stack):
    assert state(stack, "spare") == "stopped"
    loaded = client.generate(model="spare", prompt="")
    assert loaded.done_reason == "load" and state(stack, "spare") == "ready"
    unloaded = client.generate(model="spare", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    wait_until(lambda: scheduled(stack, "spare")["phase"] == "stopped", 30, "spare unloaded")
    assert state(stack, "spare") == "stopped"


def test_keep_alive_duration_unloads_after_it(client, stack):
    client.chat(model="spare", messages=GREETING, stream=False, options={"num_predict": 2}, keep_alive="2s")
    assert scheduled(stack, "spare")["ttl_s"] == 2
    # The scheduler's own phase: the listing says "stopped" as soon as the stop begins, and the
    # override ends when the stop is done.
    wait_until(lambda: scheduled(stack, "spare")["phase"] == "stopped", 30, "spare unloaded 2 s after its request")
    assert state(stack, "spare") == "stopped"
    assert scheduled(stack, "spare")["ttl_s"] == 0  # the override was for that run only


def test_keep_alive_on_v1_pins_and_zero_unloads_after_the_request(stack):
    def chat(keep_alive):
        return httpx.post(stack.url + "/v1/chat/completions", timeout=120, json={
            "model": "spare", "max_tokens": 2, "messages": GREETING, "keep_alive": keep_alive})
    assert chat(-1).status_code == 200
    assert scheduled(stack, "spare")["pinned"] is True
    assert chat(0).status_code == 200
    # The scheduler's phase: the listing says stopped as the stop begins, and a request arriving
    # before it ends would join the run that the keep_alive 0 is for.
    wait_until(lambda: scheduled(stack, "spare")["phase"] == "stopped", 30, "spare unloaded after its request")
    assert state(stack, "spare") == "stopped"
    refused = chat("whenever")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "keep_alive"


def test_admin_load_and_unload(stack):
    assert stack.admin.post("/admin/models/spare/load", timeout=120).json() == {"model": "spare", "state": "ready"}
    assert state(stack, "spare") == "ready"
    assert stack.admin.post("/admin/models/spare/unload", timeout=60).json()["result"] == "unloaded"
    assert state(stack, "spare") == "stopped"
    assert stack.admin.post("/admin/models/spare/unload", timeout=60).json()["result"] == "not loaded"
    assert stack.admin.post("/admin/models/ghost/load", timeout=10).status_code == 404
    assert httpx.post(stack.url + "/admin/unload", timeout=10).status_code == 401  # the admin token is needed


def test_unloading_a_busy_model_is_refused(stack):
    stack.admin.post("/admin/models/talk/load", timeout=120).raise_for_status()
    body = {"model": "talk", "stream": True, "max_tokens": 100000, "ignore_eos": True, "messages": GREETING}
    with httpx.stream("POST", stack.url + "/v1/chat/completions", json=body, timeout=120) as streaming:
        lines = streaming.iter_lines()
        while not next(lines).startswith("data:"):  # past the waiting comments: generating now
            pass
        busy = stack.admin.post("/admin/models/talk/unload", timeout=60)
        everything = stack.admin.post("/admin/unload", timeout=60).json()
    assert busy.status_code == 409 and "busy" in busy.json()["error"]["message"]
    assert "talk" in everything["busy"] and "talk" not in everything["unloaded"], (everything, busy.json())
    assert state(stack, "talk") == "ready"
    wait_until(lambda: scheduled(stack, "talk")["in_flight"] == 0, 30, "the cut-off stream released")


def test_cli_load_and_unload(stack):
    env = {**os.environ, "LLAMADOCK_URL": stack.url, "LLAMADOCK_ADMIN_TOKEN": stack.token}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=180)
    loaded = cli("load", "spare")
    assert loaded.returncode == 0 and "spare is ready" in loaded.stdout
    assert state(stack, "spare") == "ready"
    everything = cli("unload")
    assert everything.returncode == 0 and "spare" in everything.stdout
    assert {state(stack, m) for m in MODELS} == {"stopped"}


def test_ndjson_is_the_default_over_http(stack):
    """The HTTP API streams unless told not to (the Python client asks for one or the other)."""
    with httpx.stream("POST", stack.url + "/api/generate", timeout=120,
                      json={"model": "talk", "prompt": "hi", "options": {"num_predict": 4}}) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert len(lines) >= 2 and lines[-1]["done"] and not lines[0]["done"]
