"""The gateway as a real process in front of real llama-server processes."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from support.gateway import GatewayProcess, write_upstreams
from support.net import free_port
from support.waiting import wait_until

CHAT = [{"role": "user", "content": "Hello there"}]
# Deterministic sampling: the same prompt to the same model gives the same text.
GREEDY = {"temperature": 0, "seed": 7}


@pytest.fixture(scope="module")
def upstreams_file(tmp_path_factory, upstreams) -> Path:
    path = tmp_path_factory.mktemp("gw") / "upstreams.yaml"
    return write_upstreams(path, {
        "tiny-a": {"url": upstreams["tiny-a"].url, "aliases": ["llamacpp:tiny-a", "gpt-4o-mini"]},
        "tiny-b": {"url": upstreams["tiny-b"].url},
        "ghost": {"url": f"http://127.0.0.1:{free_port()}"},  # declared, nothing listening
    })


@pytest.fixture(scope="module")
def gateway(upstreams_file):
    with GatewayProcess(upstreams_file) as gw:
        yield gw


@pytest.fixture(scope="module")
def portable_gateway(upstreams_file):
    with GatewayProcess(upstreams_file, env={"LLAMADOCK_FAST_RELAY": "false"}) as gw:
        yield gw


@pytest.fixture(params=["fast", "portable"])
def relay_gateway(request, gateway, portable_gateway):
    """Both ways of relaying a stream: uvicorn's transport directly, and plain ASGI sends."""
    return gateway if request.param == "fast" else portable_gateway


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def direct(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def chat_text(client: openai.OpenAI, model: str, **kwargs) -> str:
    reply = client.chat.completions.create(model=model, messages=CHAT, max_tokens=24, **GREEDY, **kwargs)
    return reply.choices[0].message.content


# --- routing -----------------------------------------------------------------

def test_routes_by_name_and_alias_to_the_right_server(client, upstreams):
    from_a, from_b = chat_text(direct(upstreams["tiny-a"]), "x"), chat_text(direct(upstreams["tiny-b"]), "x")
    assert from_a != from_b, "the two test models must answer differently for this test to mean anything"
    assert chat_text(client, "tiny-a") == from_a
    assert chat_text(client, "tiny-b") == from_b
    assert chat_text(client, "llamacpp:tiny-a") == from_a
    assert chat_text(client, "GPT-4o-mini") == from_a


def test_models_lists_every_model_with_aliases_and_state(client):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"tiny-a", "tiny-b", "ghost"}
    assert models["tiny-a"].state == "ready" and models["tiny-a"].aliases == ["llamacpp:tiny-a", "gpt-4o-mini"]
    assert models["ghost"].state == "stopped" and "refuses connections" in models["ghost"].reason
    assert client.models.retrieve("llamacpp:tiny-a").id == "tiny-a"


def test_stream_through_the_openai_client_matches_the_direct_stream(client, upstreams):
    def streamed(c):
        chunks = list(c.chat.completions.create(model="tiny-b", messages=CHAT, max_tokens=48, stream=True, **GREEDY))
        return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices), len(chunks)

    via_gateway, direct_stream = streamed(client), streamed(direct(upstreams["tiny-b"]))
    assert via_gateway == direct_stream
    assert via_gateway[1] > 10


def _normalise(raw: bytes) -> bytes:
    """Blank what differs between two runs of the same request (ids, clocks, timings)."""
    raw = re.sub(rb'"(id|created|system_fingerprint)":("[^"]*"|\d+)', rb'"\1":_', raw)
    return re.sub(rb'"timings":\{[^}]*\}', b'"timings":_', raw)


def test_stream_bytes_arrive_exactly_as_llama_server_sent_them(relay_gateway, upstreams):
    body = {"model": "tiny-a", "messages": CHAT, "max_tokens": 64, "stream": True, **GREEDY}
    via = httpx.post(relay_gateway.url + "/v1/chat/completions", json=body, timeout=30)
    own = httpx.post(upstreams["tiny-a"].url + "/v1/chat/completions", json=body, timeout=30)
    assert via.status_code == own.status_code == 200
    assert via.headers["content-type"] == own.headers["content-type"]
    assert via.headers["x-llamadock-model"] == "tiny-a"
    assert _normalise(via.content) == _normalise(own.content)
    assert via.content.endswith(b"data: [DONE]\n\n")


def test_completions_and_anthropic_messages_are_relayed(client, gateway):
    completion = client.completions.create(model="tiny-a", prompt="Once", max_tokens=8)
    assert completion.choices[0].text is not None
    reply = httpx.post(gateway.url + "/v1/messages", timeout=30, json={
        "model": "tiny-b", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]})
    assert reply.status_code == 200 and reply.json()["type"] == "message"
    response = client.responses.create(model="tiny-a", input="Hi", max_output_tokens=8)
    assert response.status == "completed" and response.output


def test_upstream_passthrough_reaches_one_server(gateway):
    props = httpx.get(gateway.url + "/upstream/tiny-b/props", timeout=10)
    assert props.status_code == 200 and "tiny-b" in props.json()["model_path"]
    assert httpx.get(gateway.url + "/upstream/llamacpp:tiny-a/health", timeout=10).json() == {"status": "ok"}


def test_get_on_v1_routes_by_query_parameter(gateway):
    assert httpx.get(gateway.url + "/v1/anything", timeout=10).json()["error"]["param"] == "model"
    relayed = httpx.get(gateway.url + "/v1/anything?model=tiny-a", timeout=10)
    assert relayed.headers["x-llamadock-model"] == "tiny-a"  # llama-server's own answer, whatever it is


# --- errors ------------------------------------------------------------------

def test_unknown_model_is_404_naming_the_available_models(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="nope", messages=CHAT)
    error = raised.value.body
    assert error["code"] == "model_not_found"
    assert "tiny-a" in error["message"] and "tiny-b" in error["message"]


def test_stopped_model_is_503_with_retry_after(gateway):
    reply = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "ghost", "messages": CHAT}, timeout=10)
    assert reply.status_code == 503
    assert int(reply.headers["retry-after"]) > 0
    assert reply.json()["error"]["code"] == "model_not_ready"
    assert "stopped" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    "content, code, param",
    [(b"{oops", 400, None), (b'{"messages": []}', 400, "model"), (b"", 400, None), (b"[]", 400, None)],
)
def test_bad_bodies_are_400_in_openai_format(gateway, content, code, param):
    reply = httpx.post(gateway.url + "/v1/chat/completions", content=content, timeout=10,
                       headers={"content-type": "application/json"})
    assert reply.status_code == code
    assert reply.json()["error"]["param"] == param and reply.json()["error"]["message"]


def test_unknown_route_is_an_openai_error_not_a_bare_page(gateway):
    reply = httpx.get(gateway.url + "/nope", timeout=10)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"


# --- the registry seam: models come and go without a restart ---------------------

def test_a_model_added_to_the_file_becomes_routable_and_removal_unroutes_it(gateway, upstreams_file, upstreams, client):
    original = upstreams_file.read_text()
    try:
        data = yaml.safe_load(original)
        data["models"]["late"] = {"url": upstreams["tiny-b"].url}
        write_upstreams(upstreams_file, data["models"])
        wait_until(lambda: any(m.id == "late" for m in client.models.list().data), 5, what="'late' listed")
        assert chat_text(client, "late") == chat_text(client, "tiny-b")

        upstreams_file.write_text("models: [broken")  # a typo keeps what was there
        wait_until(lambda: httpx.get(gateway.url + "/status", timeout=5).json()["upstreams_file_error"], 5,
                   what="the bad file to be reported")
        assert chat_text(client, "late")
    finally:
        upstreams_file.write_text(original)
    wait_until(lambda: all(m.id != "late" for m in client.models.list().data), 5, what="'late' gone")
    with pytest.raises(openai.NotFoundError):
        chat_text(client, "late")


# --- streams that end badly --------------------------------------------------------

@pytest.fixture
def solo(spawn_llama, upstreams_file, gateway, portable_gateway):
    """A model of its own (one slot, long context), registered under a fresh name for one test."""
    server = spawn_llama("tiny-a", parallel=1, ctx=16384)
    server.route_name = f"solo-{server.port}"  # fresh, so no gateway can still hold an older entry
    original = upstreams_file.read_text()
    models = yaml.safe_load(original)["models"]
    write_upstreams(upstreams_file, {**models, server.route_name: {"url": server.url}})
    for gw in (gateway, portable_gateway):
        wait_until(lambda: httpx.get(f"{gw.url}/v1/models/{server.route_name}", timeout=5).json().get("state")
                   == "ready", 5, what="the model ready on every gateway")
    yield server
    upstreams_file.write_text(original)


LONG = {"messages": CHAT, "max_tokens": 12000, "ignore_eos": True, "stream": True}


def slot_busy(server) -> bool:
    return any(slot["is_processing"] for slot in httpx.get(server.url + "/slots", timeout=5).json())


def test_client_disconnect_mid_stream_stops_generation(relay_gateway, solo):
    with httpx.stream("POST", relay_gateway.url + "/v1/chat/completions", json={**LONG, "model": solo.route_name}, timeout=30) as reply:
        lines = reply.iter_lines()
        for _ in range(20):
            next(lines)
        assert slot_busy(solo)
    # 12,000 tokens take several seconds at these speeds: the slot going idle well
    # before that means llama-server saw the client leave through the gateway.
    started = time.monotonic()
    wait_until(lambda: not slot_busy(solo), 3, what="llama-server to stop generating")
    stopped_after = time.monotonic() - started
    assert stopped_after < 3


def connections_to(port: int) -> int:
    """Established TCP connections whose remote end is 127.0.0.1:port (from /proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2].endswith(f":{port:04X}") and fields[3] == "01":
            count += 1
    return count


def test_client_disconnect_before_headers_drops_the_upstream_request(gateway, solo):
    """A non-streaming answer has no header until it is done: the gateway must still notice.

    llama-server (this build) finishes a non-streamed generation even when its
    client has gone, so what the gateway can do, and must, is drop its
    connection at once rather than hold it until the answer is complete.
    """
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        body = json.dumps({**LONG, "model": solo.route_name, "stream": False}).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        wait_until(lambda: slot_busy(solo), 5, what="generation to start")
        assert connections_to(solo.port) >= 1
    wait_until(lambda: connections_to(solo.port) == 0, 2, what="the gateway to drop its upstream connection")
    assert slot_busy(solo), "the answer is still being generated: the drop came from the gateway, not the end"


def test_upstream_killed_mid_stream_ends_the_stream_with_an_error_event_within_a_second(relay_gateway, solo):
    with httpx.stream("POST", relay_gateway.url + "/v1/chat/completions", json={**LONG, "model": solo.route_name}, timeout=30) as reply:
        lines = reply.iter_lines()
        for _ in range(20):
            next(lines)
        solo.kill()
        killed = time.monotonic()
        rest = list(lines)
        ended_after = time.monotonic() - killed
    assert ended_after < 1.0
    events = [line for line in rest if line]
    assert events[-2] == "event: error"
    assert json.loads(events[-1].removeprefix("data: "))["error"]["code"] == "upstream_broken"


def test_upstream_killed_mid_stream_raises_in_the_openai_client(client, solo):
    stream = client.chat.completions.create(model=solo.route_name, messages=CHAT, max_tokens=12000, stream=True,
                                            extra_body={"ignore_eos": True})
    next(iter(stream))
    solo.kill()
    with pytest.raises(openai.APIError, match="broke off"):
        for _ in stream:
            pass


# --- gateway endpoints ----------------------------------------------------------

def test_gpu_without_a_gpu_says_so(gateway):
    reply = httpx.get(gateway.url + "/gpu", timeout=10)
    assert reply.status_code == 200
    assert reply.json()["available"] is False and reply.json()["reason"]


def test_status_shows_models_and_gpu(gateway):
    status = httpx.get(gateway.url + "/status", timeout=10).json()
    assert {m["id"] for m in status["models"]} >= {"tiny-a", "tiny-b"}
    assert status["gpu"]["available"] is False


def test_metrics_count_requests_tokens_and_ttft(client, gateway):
    list(client.chat.completions.create(model="tiny-b", messages=CHAT, max_tokens=16, stream=True, **GREEDY))
    text = httpx.get(gateway.url + "/metrics", timeout=10).text
    assert re.search(r'llamadock_requests_total\{endpoint="chat/completions",model="tiny-b",status="200"\} [1-9]', text)
    assert re.search(r'llamadock_streamed_tokens_total\{model="tiny-b"\} [1-9]', text)
    assert re.search(r'llamadock_time_to_first_token_seconds_count\{model="tiny-b"\} [1-9]', text)
    assert 'llamadock_in_flight_requests{model="tiny-b"} 0.0' in text


def test_docs_and_redoc_document_every_endpoint_with_examples(gateway):
    assert httpx.get(gateway.url + "/docs", timeout=10).status_code == 200
    assert httpx.get(gateway.url + "/redoc", timeout=10).status_code == 200
    spec = httpx.get(gateway.url + "/openapi.json", timeout=10).json()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses",
                 "/v1/models", "/upstream/{model}/{path}", "/gpu", "/status", "/health", "/metrics"):
        assert path in spec["paths"], path
    chat = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert "stream" in chat["examples"]


# --- API keys ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed_gateway(upstreams_file):
    with GatewayProcess(upstreams_file, api_keys="k1,k2", env={"LLAMADOCK_MAX_BODY_BYTES": "4096"}) as gw:
        yield gw


def test_api_keys_when_on(keyed_gateway):
    without = openai.OpenAI(base_url=keyed_gateway.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        without.models.list()
    with_key = openai.OpenAI(base_url=keyed_gateway.url + "/v1", api_key="k2", max_retries=0)
    assert chat_text(with_key, "tiny-a")
    anthropic_style = httpx.get(keyed_gateway.url + "/v1/models", headers={"x-api-key": "k1"}, timeout=10)
    assert anthropic_style.status_code == 200
    assert httpx.get(keyed_gateway.url + "/upstream/tiny-a/props", timeout=10).status_code == 401
    assert httpx.get(keyed_gateway.url + "/health", timeout=10).status_code == 200  # liveness stays open


def test_api_keys_off_by_default(client):
    assert client.models.list().data


def test_oversized_body_is_413(keyed_gateway):
    reply = httpx.post(keyed_gateway.url + "/v1/chat/completions", headers={"authorization": "Bearer k1"},
                       json={"model": "tiny-a", "messages": [{"role": "user", "content": "x" * 5000}]}, timeout=10)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"
