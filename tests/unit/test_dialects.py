"""The dialects behind the one exchange: each reads its requests, shapes its errors (before an
answer and inside a stream) and translates (or not) the call to llama-server; and through the
app, the one exchange answers every surface's failures in that surface's own shape."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from common.errors import ApiError
from gateway import errors
from gateway.proxy import relay
from gateway.app import SURFACES, create_app
from gateway.proxy.dialect import Asked, Dialect, UpstreamCall, dialect_for
from gateway.api import anthropic, ollama, openai
from gateway.scheduling.progress import Kind, Progress
from gateway.routes.table import ModelRoute, ModelState, RouteTable
from gateway.settings import GatewaySettings
from support.net import free_port
from support.waiting import wait_until

EVERY = {"openai": openai.PLAIN, "anthropic": anthropic.DIALECT, "ollama": ollama.CHAT}
NO_REQUEST = SimpleNamespace(headers={}, query_params={})


def test_every_dialect_has_the_whole_protocol():
    wanted = {name for name in dir(Dialect) if not name.startswith("_")} | set(Dialect.__annotations__)
    for dialect in EVERY.values():
        assert wanted <= set(dir(dialect)), (dialect.name, wanted - set(dir(dialect)))


# ---- errors -----------------------------------------------------------------------------------

def test_openai_and_anthropic_answer_errors_in_openais_json():
    error = errors.model_not_ready("m", "starting", "loading", 2)
    for dialect in (openai.PLAIN, openai.CHAT, anthropic.DIALECT):
        response = dialect.error_response(error)
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert json.loads(response.body) == {"error": {"message": error.message, "type": "server_error",
                                                       "param": None, "code": "model_not_ready"}}


def test_ollama_answers_errors_as_one_message():
    error = errors.model_not_found("nope", ["a"])
    response = ollama.CHAT.error_response(error)
    assert response.status_code == 404 and json.loads(response.body) == {"error": error.message}


def test_each_dialect_ends_a_stream_with_its_own_error_event():
    error = errors.upstream_broken("m", "gone")
    assert openai.PLAIN.stream_error(error) == b"event: error\ndata: " + json.dumps(error.body()).encode() + b"\n\n"
    assert json.loads(anthropic.DIALECT.stream_error(error).split(b"data: ", 1)[1]) == {
        "type": "error", "error": {"type": "api_error", "message": error.message}}
    line = ollama.CHAT.stream_error(error)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and json.loads(line) == {"error": error.message}


def test_errors_under_api_are_ollamas_and_the_rest_openais():
    assert dialect_for(SURFACES, "/api/nope", default=openai.PLAIN) is ollama.DIALECT
    assert dialect_for(SURFACES, "/v1/messages", default=openai.PLAIN).error_response(ApiError(400, "x")).body \
        == openai.PLAIN.error_response(ApiError(400, "x")).body
    assert dialect_for(SURFACES, "/apis", default=openai.PLAIN) is openai.PLAIN


# ---- reading and translating --------------------------------------------------------------------

def test_openai_reads_model_stream_keep_alive_and_forwards_untouched():
    asked = openai.PLAIN.read(b'{"model": "m", "stream": true, "keep_alive": "5m"}', NO_REQUEST)
    assert (asked.model, asked.stream, asked.keep_alive) == ("m", True, 300.0)
    incoming = UpstreamCall("POST", "/v1/completions?x=1", [(b"content-type", b"application/json")], b"{}")
    assert openai.PLAIN.request(asked, "m", incoming) is incoming
    with pytest.raises(ApiError) as bad:
        openai.PLAIN.read(b'{"model": "m", "keep_alive": "soon"}', NO_REQUEST)
    assert bad.value.status == 400 and bad.value.param == "keep_alive"


def test_only_a_chat_stream_that_opts_in_hears_its_wait_as_reasoning():
    opted = SimpleNamespace(headers={"x-llamadock-progress": "reasoning"}, query_params={})
    body = b'{"model": "m", "stream": true}'
    assert openai.CHAT.read(body, opted).reasoning_progress
    assert not openai.CHAT.read(body, NO_REQUEST).reasoning_progress
    assert not openai.PLAIN.read(body, opted).reasoning_progress  # completions chunks carry no reasoning
    assert not anthropic.DIALECT.read(body, opted).reasoning_progress


def test_openai_streams_wait_aloud_ollama_waits_quietly():
    asked = Asked(model="m", stream=True)
    assert openai.PLAIN.tells_progress(asked) and not openai.PLAIN.tells_progress(Asked(model="m"))
    assert openai.PLAIN.progress_event(asked, None, 1.25, "m", "x") == b": waiting for model m 1.2 s\n\n"
    assert not ollama.CHAT.tells_progress(asked)


def test_ollama_translates_to_v1_with_the_route_tables_name():
    asked = ollama.CHAT.read(b'{"model": "qwen3:latest", "messages": [{"role": "user", "content": "hi"}]}',
                             NO_REQUEST)
    assert asked.stream and ollama.CHAT.candidates(asked.model) == ["qwen3:latest", "qwen3"]
    call = ollama.CHAT.request(asked, "qwen3", UpstreamCall("POST", "/api/chat", [], b"ignored"))
    assert (call.method, call.target) == ("POST", "/v1/chat/completions")
    assert json.loads(call.body)["model"] == "qwen3" and json.loads(call.body)["stream"] is True
    raw = ollama.GENERATE.read(b'{"model": "m", "prompt": "1 2", "raw": true, "stream": false}', NO_REQUEST)
    assert not raw.stream and ollama.GENERATE.request(raw, "m", call).target == "/v1/completions"
    assert not ollama.EMBED.read(b'{"model": "m", "input": "x"}', NO_REQUEST).stream


def test_ollama_refuses_what_ollama_would_refuse():
    for body in (b"{", b"[]", b"", b'{"prompt": "x"}', b'{"model": "m", "keep_alive": "soon"}'):
        with pytest.raises(ApiError) as bad:
            ollama.GENERATE.read(body, NO_REQUEST)
        assert bad.value.status == 400
    asked = ollama.CHAT.read(b'{"model": "m", "messages": "hi"}', NO_REQUEST)
    with pytest.raises(ApiError):
        ollama.CHAT.request(asked, "m", UpstreamCall("POST", "/api/chat", [], b""))


# ---- through the app: one exchange, each dialect's shapes ----------------------------------------

class OneRoute:
    """The registry seam: one model the gateway believes ready."""

    synced = current = True
    error = file_error = None

    def __init__(self, url: str | None) -> None:
        self.route = ModelRoute(name="m", url=url, state=ModelState.READY)

    def route_table(self) -> RouteTable:
        return RouteTable.of([self.route])

    async def refresh(self, name: str) -> ModelRoute:
        return self.route

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class BreakingServer:
    """A model server that answers 200 with one SSE event, then dies mid-stream (or answers ``status``
    with an OpenAI error). Keeps what it was sent."""

    EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'

    def __init__(self, status: int = 200, complete: bool = False) -> None:
        self.status = status
        self.complete = complete  # end the stream properly instead
        self.seen: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, body = data.split(b"\r\n\r\n", 1)
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                self.seen.append(head.split(b"\r\n")[0] + b" " + body)
                if self.status != 200:
                    error = json.dumps({"error": {"message": "no such slot", "code": 400}}).encode()
                    conn.sendall(b"HTTP/1.1 %d Bad\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (self.status, len(error), error))
                    continue
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                             + b"%x\r\n%s\r\n" % (len(self.EVENT), self.EVENT)
                             + (b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n" if self.complete else b""))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def broken(tmp_path: Path):
    def make(status: int = 200):
        server = BreakingServer(status)
        app = create_app(GatewaySettings(upstreams_file=tmp_path / "none.yaml"), registry=OneRoute(server.url))
        made.append(server)
        return server, TestClient(app)
    made: list[BreakingServer] = []
    yield make
    for server in made:
        server.close()


def test_a_stream_that_breaks_ends_with_each_dialects_error_event(broken):
    server, client = broken()
    with client:
        chat = client.post("/v1/chat/completions", json={"model": "m", "messages": [], "stream": True})
        assert chat.status_code == 200 and chat.text.startswith(BreakingServer.EVENT.decode())
        assert json.loads(chat.text.rsplit("data: ", 1)[1])["error"]["code"] == "upstream_broken"

        messages = client.post("/v1/messages", json={"model": "m", "max_tokens": 1, "messages": [], "stream": True})
        event = json.loads(messages.text.rsplit("data: ", 1)[1])
        assert event["type"] == "error" and "broke off" in event["error"]["message"]

        ollama_chat = client.post("/api/chat", json={"model": "m:latest", "messages": [{"role": "user", "content": "x"}]})
        assert ollama_chat.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in ollama_chat.text.splitlines()]
        assert lines[0]["message"]["content"] == "Hi" and not lines[0]["done"]
        assert "broke off its answer" in lines[-1]["error"] and len(lines) == 2
    assert server.seen[-1].startswith(b"POST /v1/chat/completions HTTP/1.1 ")  # translated for llama-server
    assert json.loads(server.seen[-1].split(b" ", 3)[3])["model"] == "m"


def test_ollama_gets_a_models_refusal_as_its_own_error(broken):
    _, client = broken(status=400)
    with client:
        answer = client.post("/api/generate", json={"model": "m", "prompt": "x", "stream": False})
        assert answer.status_code == 400 and answer.json() == {"error": "Model 'm': no such slot"}
        untouched = client.post("/v1/completions", json={"model": "m", "prompt": "x"})
        assert untouched.status_code == 400 and untouched.json()["error"]["message"] == "no such slot"


@pytest.mark.parametrize("path, body", [
    ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": False}),
    ("/api/embed", {"model": "m", "input": "x"}),
])
def test_an_unreachable_model_is_the_same_503_in_ollamas_shape(tmp_path: Path, path, body):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    app = create_app(GatewaySettings(upstreams_file=tmp_path / "none.yaml"), registry=OneRoute(f"http://127.0.0.1:{port}"))
    with TestClient(app) as client:
        answer = client.post(path, json=body)
    assert answer.status_code == 503 and set(answer.json()) == {"error"} and "retry-after" in answer.headers
    assert "cannot connect" in answer.json()["error"]


def test_errors_before_any_route_speak_the_paths_dialect(tmp_path: Path):
    app = create_app(GatewaySettings(upstreams_file=tmp_path / "none.yaml"), registry=OneRoute(None))
    with TestClient(app) as client:
        assert set(client.get("/api/nope").json()) == {"error"} and client.get("/api/nope").status_code == 404
        assert client.get("/v1/nope").json()["error"]["param"] == "model"
        assert client.post("/api/chat", content=b"{").json()["error"].startswith("The request body is not valid JSON")



@pytest.mark.parametrize("fast", [True, False])
def test_under_uvicorn_a_stream_still_takes_the_direct_pipe(tmp_path: Path, monkeypatch, fast):
    """The fast path (the upstream's read callback writes to uvicorn's transport) is what keeps a
    streamed token cheap: the exchange must still choose it, unless told not to."""
    piped = []
    direct = relay.pipe_direct

    async def watched(response, server, count):
        piped.append(server)
        await direct(response, server, count)

    monkeypatch.setattr(relay, "pipe_direct", watched)
    upstream = BreakingServer(complete=True)
    port = free_port()
    app = create_app(GatewaySettings(upstreams_file=tmp_path / "none.yaml", fast_relay=fast),
                     registry=OneRoute(upstream.url))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           http="httptools", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "the gateway to listen")
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=10,
                            json={"model": "m", "messages": [], "stream": True})
        assert answer.status_code == 200 and answer.content == BreakingServer.EVENT + b"data: [DONE]\n\n"
        assert len(piped) == (1 if fast else 0)
    finally:
        server.should_exit = True
        thread.join(10)
        upstream.close()


class WaitingLifecycle:
    """The scheduler's side, faked: every request for "m" waits ``wait_s`` while its model loads,
    then is let through (or refused with ``refusal``)."""

    def __init__(self, wait_s: float, refusal: ApiError | None = None) -> None:
        self.wait_s, self.refusal = wait_s, refusal
        self.released = 0

    def knows(self, name: str) -> bool:
        return name == "m"

    async def stop(self) -> None: ...

    class client:  # its HTTP client to the orchestrator, closed at shutdown
        @staticmethod
        async def aclose() -> None: ...

    def request(self, name: str):
        lifecycle = self
        future = asyncio.get_running_loop().create_future()
        decide = (lambda: future.set_exception(self.refusal)) if self.refusal else (lambda: future.set_result(None))
        asyncio.get_running_loop().call_later(self.wait_s, lambda: future.done() or decide())

        class Ticket:
            def __init__(self) -> None:
                self.future = future

            async def wait(self) -> None:
                await asyncio.shield(future)

            def progress(self):
                if future.done():
                    return None
                return Progress(Kind.LOADING, "loading m 0.1 s", model="m", position=1, queue_length=1,
                                estimated_wait_s=None, loading_s=0.1)

            def release(self) -> None:
                lifecycle.released += 1

            def wait_span(self):
                return 0.0, lifecycle.wait_s, None  # its model was loading the whole time
        return Ticket()


@pytest.fixture
def waiting(tmp_path: Path):
    upstream = BreakingServer(complete=True)

    def make(lifecycle: WaitingLifecycle) -> TestClient:
        app = create_app(GatewaySettings(upstreams_file=tmp_path / "none.yaml"), registry=OneRoute(upstream.url))
        app.state.gateway.lifecycle = lifecycle
        return TestClient(app)
    yield make
    upstream.close()


def test_a_waiting_stream_hears_its_dialects_progress_then_the_answer(waiting):
    lifecycle = WaitingLifecycle(wait_s=0.3)
    with waiting(lifecycle) as client:
        told = client.post("/v1/chat/completions", headers={"x-llamadock-progress": "reasoning"},
                           json={"model": "m", "messages": [], "stream": True})
        quiet = client.post("/api/chat", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert told.status_code == 200 and told.headers["content-type"] == "text/event-stream"
    assert told.text.startswith(": loading m 0.1 s\n\ndata: ")
    assert '"reasoning_content": "Loading m' in told.text
    assert told.text.endswith(BreakingServer.EVENT.decode() + "data: [DONE]\n\n")
    assert quiet.text.splitlines()[0].startswith('{"model": "m"')  # Ollama: no word while it waited
    assert json.loads(quiet.text.splitlines()[-1])["load_duration"] >= 0.3e9
    assert lifecycle.released == 2


@pytest.mark.parametrize("path, body, last", [
    ("/v1/chat/completions", {"model": "m", "messages": [], "stream": True},
     lambda text: json.loads(text.rsplit("data: ", 1)[1])["error"]["code"] == "cannot_fit"),
    ("/v1/messages", {"model": "m", "max_tokens": 1, "messages": [], "stream": True},
     lambda text: json.loads(text.rsplit("data: ", 1)[1])["type"] == "error"),
])
def test_a_refusal_after_the_stream_began_is_the_dialects_error_event(waiting, path, body, last):
    lifecycle = WaitingLifecycle(wait_s=0.3, refusal=ApiError(503, "it can never fit", "cannot_fit"))
    with waiting(lifecycle) as client:
        answer = client.post(path, json=body)
    assert answer.status_code == 200 and answer.text.startswith(": loading m")
    assert "event: error\n" in answer.text and last(answer.text)
    assert lifecycle.released == 1


def test_a_refusal_before_anything_was_sent_is_the_dialects_error_json(waiting):
    lifecycle = WaitingLifecycle(wait_s=0.05, refusal=ApiError(503, "it can never fit", "cannot_fit",
                                                                 headers={"Retry-After": "9"}))
    with waiting(lifecycle) as client:
        openai_answer = client.post("/v1/chat/completions", json={"model": "m", "messages": []})
        ollama_answer = client.post("/api/chat", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert openai_answer.status_code == 503 and openai_answer.json()["error"]["code"] == "cannot_fit"
    assert ollama_answer.status_code == 503 and ollama_answer.json() == {"error": "it can never fit"}
    assert ollama_answer.headers["retry-after"] == "9"
    assert lifecycle.released == 2
