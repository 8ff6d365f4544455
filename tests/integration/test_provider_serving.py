"""Providers through the real gateway: a real llama-server started with --api-key (the right key
and a wrong one), one that is down, and, for what llama-server cannot do (no /health, garbage, a
huge body, a stall), a small OpenAI-compatible stub. Our own static model is a real llama-server."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import openai
import pytest

from support.gateway import GatewayProcess, write_upstreams
from support.llama import LlamaServer
from support.net import free_port
from support.openai_stub import StubProvider
from support.waiting import wait_until

KEY = "sekrit-provider-key-4242"
CHAT = [{"role": "user", "content": "Hello there"}]
GREEDY = {"temperature": 0, "seed": 7, "max_tokens": 16}


@pytest.fixture(scope="module")
def secured(llama_server_bin, tiny_models, tmp_path_factory):
    """Another llama-server, outside any stack, with a key; its model (tiny-b's weights) calls
    itself tiny-a, the name of one of our own models."""
    server = LlamaServer(llama_server_bin, tiny_models["tiny-b"], alias="tiny-a", extra_args=["--api-key", KEY],
                         log_dir=tmp_path_factory.mktemp("secured"))
    with server:
        yield server


@pytest.fixture(scope="module")
def stub():
    with StubProvider(huge_bytes=2 * 2**20) as server:
        yield server


@pytest.fixture(scope="module")
def down_url():
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def upstreams_file(tmp_path_factory, upstreams, secured, stub, down_url):
    path = tmp_path_factory.mktemp("providers") / "upstreams.yaml"
    write_upstreams(path, {"tiny-a": {"url": upstreams["tiny-a"].url}})
    text = path.read_text() + f"""providers:
  secured: {{url: "{secured.url}/v1", api_key_env: SECURED_KEY, refresh_s: 0.5}}
  wrongkey: {{url: "{secured.url}", api_key_env: WRONG_KEY, refresh_s: 0.5}}
  stub: {{url: "{stub.url}", refresh_s: 0.5, timeout_s: 1.5, max_answer_bytes: 1048576}}
  down: {{url: "{down_url}", refresh_s: 0.5}}
"""
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def gateway(upstreams_file):
    env = {"SECURED_KEY": KEY, "WRONG_KEY": "not-the-key", "LLAMADOCK_CONNECT_TIMEOUT_S": "2",
           "LLAMADOCK_LOG_LEVEL": "info"}
    with GatewayProcess(upstreams_file, env=env) as gw:
        wait_until(lambda: "secured:tiny-a" in httpx.get(gw.url + "/v1/models").text, timeout=15)
        yield gw


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def keyed(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def text_of(client, model, **kwargs) -> str:
    return client.chat.completions.create(model=model, messages=CHAT, **GREEDY, **kwargs).choices[0].message.content


def streamed(client, model) -> str:
    chunks = client.chat.completions.create(model=model, messages=CHAT, stream=True, **GREEDY)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def chat(gateway, model, **body) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", json={"model": model, "messages": CHAT, **body},
                      timeout=30)


# --- listing ------------------------------------------------------------------------------------

def test_provider_models_are_listed_with_their_provider(client, gateway):
    models = {m.id: m for m in client.models.list().data}
    assert models["secured:tiny-a"].owned_by == "secured" and models["secured:tiny-a"].provider == "secured"
    assert models["secured:tiny-a"].aliases == []  # ours has the bare name
    assert models["tiny-a"].owned_by == "llamadock" and models["tiny-a"].provider is None
    assert models["stub:echo"].aliases == ["echo"] and models["stub:echo"].state == "ready"  # it has no /health
    assert not any(name.startswith(("wrongkey:", "down:")) for name in models)  # never reached: nothing listed
    tags = {t["name"]: t for t in httpx.get(gateway.url + "/api/tags").json()["models"]}
    assert tags["secured:tiny-a"]["provider"] == "secured" and tags["tiny-a"]["provider"] is None


def test_status_says_how_each_provider_is_and_never_shows_a_key(gateway):
    status = httpx.get(gateway.url + "/status").json()
    providers = {p["name"]: p for p in status["providers"]}
    assert providers["secured"]["state"] == "ready" and providers["secured"]["models"] == 1
    assert providers["wrongkey"]["code"] == "provider_auth_failed" and "WRONG_KEY" in providers["wrongkey"]["reason"]
    assert providers["down"]["state"] == "stopped" and providers["down"]["code"] == "provider_unavailable"
    for text in (httpx.get(gateway.url + "/status").text, httpx.get(gateway.url + "/v1/models").text,
                 gateway.log_text()):
        assert KEY not in text and "not-the-key" not in text


# --- routing and streaming -----------------------------------------------------------------------

def test_a_keyed_provider_streams_and_answers_with_its_key(client, secured):
    assert streamed(client, "secured:tiny-a") == streamed(keyed(secured), "tiny-a")
    assert text_of(client, "secured:tiny-a") == text_of(keyed(secured), "tiny-a")


def test_our_own_model_wins_the_bare_name(client, upstreams, secured):
    ours = text_of(openai.OpenAI(base_url=upstreams["tiny-a"].url + "/v1", api_key="x", max_retries=0), "tiny-a")
    theirs = text_of(keyed(secured), "tiny-a")
    assert ours != theirs, "the two servers must answer differently for this test to mean anything"
    assert text_of(client, "tiny-a") == ours
    assert text_of(client, "secured:tiny-a") == theirs


def test_a_provider_without_health_streams_by_bare_name_and_gets_its_own_model_name(client, stub):
    assert streamed(client, "echo") == "stub says hi"
    assert text_of(client, "stub:echo") == "stub says hi"
    assert stub.requests[-1]["model"] == "echo"  # its own name for it, not ours
    assert stub.requests[-1]["authorization"] is None  # the client's key is for the gateway, never passed on


def test_the_names_apps_send_reach_our_own_models(client, upstreams):
    ours = text_of(openai.OpenAI(base_url=upstreams["tiny-a"].url + "/v1", api_key="x", max_retries=0), "tiny-a")
    wait_until(lambda: client.models.retrieve("tiny-a.gguf").id == "tiny-a", timeout=5)  # its file, from /props
    for name in ("llamacpp:tiny-a", "llamadock:tiny-a", "tiny-a.gguf", "TINY-A"):
        assert text_of(client, name) == ours, name


# --- errors --------------------------------------------------------------------------------------

def test_a_wrong_key_is_said_clearly(gateway):
    answer = chat(gateway, "wrongkey:tiny-a")
    error = answer.json()["error"]
    assert answer.status_code == 401 and error["code"] == "provider_auth_failed"
    assert "wrongkey" in error["message"] and "WRONG_KEY" in error["message"] and "not-the-key" not in answer.text


def test_a_provider_that_is_down_is_named_at_once(gateway, down_url):
    started = time.monotonic()
    answer = chat(gateway, "down:qwen3", stream=True)
    error = answer.json()["error"]
    assert answer.status_code == 503 and error["code"] == "provider_unavailable"
    assert "'down'" in error["message"] and down_url in error["message"] and answer.headers["retry-after"]
    assert time.monotonic() - started < 5  # bounded: a refused connect, the connect timeout at worst


@pytest.mark.parametrize("model, status, code", [
    ("garbage", 502, "provider_garbage"),
    ("huge", 502, "provider_answer_too_large"),
    ("stall", 504, "provider_timeout"),
    ("bad-param", 400, "invalid_value"),
])
def test_a_provider_answering_badly_gets_a_clear_error(gateway, model, status, code):
    started = time.monotonic()
    answer = chat(gateway, f"stub:{model}")
    error = answer.json()["error"]
    assert (answer.status_code, error["code"]) == (status, code), answer.text
    assert "'stub'" in error["message"] and time.monotonic() - started < 10
    if model == "bad-param":
        assert "temperature must be at most 2" in error["message"] and error["param"] == "temperature"


def test_a_stalled_stream_ends_with_an_error_event_and_never_blocks_other_models(gateway, client, stub):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stalled = pool.submit(lambda: httpx.post(gateway.url + "/v1/chat/completions", timeout=30, json={
            "model": "stub:stall-stream", "messages": CHAT, "stream": True}))
        wait_until(lambda: any(r["model"] == "stall-stream" for r in stub.requests), timeout=10)
        begun = time.monotonic()  # the provider is stalling now
        assert text_of(client, "tiny-a")  # our own model answers meanwhile
        assert time.monotonic() - begun < 1.5  # before the stall's bound
        answer = stalled.result(timeout=20)
    assert answer.status_code == 200 and b"stub says" in answer.content
    assert b"event: error" in answer.content and b"provider_timeout" in answer.content


def test_a_providers_section_that_does_not_parse_keeps_everything_served(gateway, upstreams_file, client):
    good = upstreams_file.read_text()
    try:
        assert len(good.splitlines()) == 8
        upstreams_file.write_text(good + '  broken: {url: "http://127.0.0.1:8090", refresh_s: -1}\n')
        refused = wait_until(lambda: httpx.get(gateway.url + "/status").json()["upstreams_file_error"], timeout=5)
        assert "line 9: providers.broken.refresh_s" in refused, refused
        assert streamed(client, "secured:tiny-a") and text_of(client, "tiny-a") and text_of(client, "echo")
    finally:
        upstreams_file.write_text(good)
    wait_until(lambda: httpx.get(gateway.url + "/status").json()["upstreams_file_error"] is None, timeout=5)


def test_no_default_model_means_400_and_404(gateway):
    missing = httpx.post(gateway.url + "/v1/chat/completions", json={"messages": CHAT}, timeout=10)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    assert chat(gateway, "gpt-4o").status_code == 404


# --- the default model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def default_gateway(tmp_path_factory, upstreams):
    path = write_upstreams(tmp_path_factory.mktemp("default") / "upstreams.yaml",
                           {"tiny-a": {"url": upstreams["tiny-a"].url}, "tiny-b": {"url": upstreams["tiny-b"].url}})
    with GatewayProcess(path, env={"LLAMADOCK_DEFAULT_MODEL": "tiny-b"}) as gw:
        yield gw


def test_the_default_model_answers_unknown_and_missing_names_and_says_it_answered(default_gateway):
    for body in ({"model": "gpt-4o-mini"}, {}, {"model": ""}):
        answer = httpx.post(default_gateway.url + "/v1/chat/completions", timeout=30,
                            json={**body, "messages": CHAT, "max_tokens": 4})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "tiny-b" and answer.headers["x-llamadock-model"] == "tiny-b"
    stream = httpx.post(default_gateway.url + "/v1/chat/completions", timeout=30,
                        json={"model": "claude-3", "messages": CHAT, "max_tokens": 4, "stream": True})
    chunks = [line for line in stream.text.split("\n") if line.startswith("data: {")]
    assert chunks and all('"model":"tiny-b"' in line for line in chunks)
    named = httpx.post(default_gateway.url + "/v1/chat/completions", timeout=30,
                       json={"model": "tiny-a", "messages": CHAT, "max_tokens": 4})
    assert named.json()["model"] == "tiny-a"  # a name it knows is never substituted


def test_a_provider_whose_model_list_stalls_delays_nothing(tmp_path, upstreams):
    with StubProvider(stall_listing=True) as stalled:
        path = write_upstreams(tmp_path / "upstreams.yaml", {"tiny-a": {"url": upstreams["tiny-a"].url}})
        path.write_text(path.read_text() + f'providers:\n  slow: {{url: "{stalled.url}", refresh_s: 30}}\n')
        started = time.monotonic()
        with GatewayProcess(path) as gw:
            assert time.monotonic() - started < 8  # healthy without waiting out the provider
            assert chat(gw, "tiny-a", max_tokens=4).status_code == 200
            status = wait_until(lambda: {p["name"]: p for p in httpx.get(gw.url + "/status").json()["providers"]}
                                ["slow"]["code"] == "provider_timeout" and httpx.get(gw.url + "/status").json(),
                                timeout=15)
            assert "did not answer in time" in status["providers"][0]["reason"]
            refused = chat(gw, "slow:anything")
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "provider_unavailable"


def test_a_client_leaving_a_providers_stream_stops_its_generation(gateway, upstreams_file, spawn_llama):
    """As for our own models: the provider's connection is dropped, and its llama-server stops."""
    solo = spawn_llama("tiny-a", parallel=1, ctx=16384, alias="long", extra_args=["--api-key", KEY])
    original = upstreams_file.read_text()
    upstreams_file.write_text(original + f'  solo: {{url: "{solo.url}", api_key_env: SECURED_KEY, refresh_s: 0.5}}\n')

    def busy() -> bool:
        slots = httpx.get(solo.url + "/slots", headers={"authorization": f"Bearer {KEY}"}, timeout=5).json()
        return any(slot["is_processing"] for slot in slots)

    try:
        wait_until(lambda: "solo:long" in httpx.get(gateway.url + "/v1/models").text, timeout=10)
        body = {"model": "solo:long", "messages": CHAT, "max_tokens": 15000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=30) as reply:
            lines = reply.iter_lines()
            for _ in range(20):
                next(lines)
            assert busy()
        # 15,000 tokens take ~10 s here: idle well before means it saw the client leave.
        wait_until(lambda: not busy(), 4, what="the provider's llama-server to stop generating")
    finally:
        upstreams_file.write_text(original)


def test_ollama_clients_reach_a_providers_model_too(gateway, secured):
    import ollama

    client = ollama.Client(host=gateway.url)
    expected = text_of(keyed(secured), "tiny-a")
    parts = list(client.chat(model="secured:tiny-a", messages=CHAT, stream=True,
                             options={"temperature": 0, "seed": 7, "num_predict": 16}))
    assert len(parts) > 2 and "".join(p.message.content or "" for p in parts) == expected
    whole = client.chat(model="secured:tiny-a", messages=CHAT, options={"temperature": 0, "seed": 7, "num_predict": 16})
    assert whole.message.content == expected
