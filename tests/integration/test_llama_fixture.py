"""The llama-server fixtures themselves work: real processes, tiny models, OpenAI API."""

from __future__ import annotations

import httpx
import openai
import pytest


@pytest.fixture(params=["tiny-a", "tiny-b"])
def upstream(request, upstreams):
    return upstreams[request.param]


def test_health_and_models(upstream):
    r = httpx.get(upstream.url + "/health", timeout=5)
    assert r.status_code == 200
    r = httpx.get(upstream.url + "/v1/models", timeout=5)
    assert r.status_code == 200
    ids = [m["id"] for m in r.json()["data"]]
    assert ids == [upstream.alias]


def test_chat_completion(upstream):
    client = openai.OpenAI(base_url=upstream.url + "/v1", api_key="x", max_retries=0, timeout=30)
    resp = client.chat.completions.create(
        model=upstream.alias,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=16,
    )
    assert len(resp.choices) == 1
    assert resp.choices[0].message.role == "assistant"
    assert isinstance(resp.choices[0].message.content, str)
    assert resp.choices[0].finish_reason == "length"  # tiny models never emit EOS
    assert resp.usage.completion_tokens == 16


def test_chat_completion_stream(upstream):
    client = openai.OpenAI(base_url=upstream.url + "/v1", api_key="x", max_retries=0, timeout=30)
    stream = client.chat.completions.create(
        model=upstream.alias,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=16,
        stream=True,
    )
    chunks = list(stream)
    assert len(chunks) >= 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert any(c.choices and c.choices[0].finish_reason == "length" for c in chunks)


def test_models_differ(upstreams, tiny_models):
    # llama-server exposes neither general.name nor other GGUF metadata in /props or
    # /v1/models: check the served file, the ids, and greedy outputs.
    seen = {}
    for name, srv in upstreams.items():
        props = httpx.get(srv.url + "/props", timeout=5).json()
        assert props["model_alias"] == name
        assert props["model_path"] == str(tiny_models[name])
        meta = httpx.get(srv.url + "/v1/models", timeout=5).json()["data"][0]["meta"]
        assert (meta["n_vocab"], meta["n_embd"], meta["n_ctx_train"]) == (32000, 64, 32768)
        r = httpx.post(
            srv.url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 12, "temperature": 0},
            timeout=30,
        )
        seen[name] = r.json()["choices"][0]["message"]["content"]
    assert seen["tiny-a"] != seen["tiny-b"]


def test_spawn_llama(spawn_llama):
    srv = spawn_llama("tiny-b", parallel=1, ctx=1024)
    assert httpx.get(srv.url + "/health", timeout=5).status_code == 200
    pid = srv.pid
    srv.kill()
    assert not srv.running and pid is not None
    assert "n_slots = 1" in srv.log_text()
