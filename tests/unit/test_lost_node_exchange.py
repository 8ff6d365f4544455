"""A model's server lost with its node while it serves: a swarm node whose network is cut sends
nothing more, and its connections hang until TCP gives up. The scheduler's word that the model's
node is lost (``Ticket.on_lost``) ends the answer at once: a 503 with Retry-After before anything
was sent, an error event in a stream already under way; the ticket is released either way."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from test_dialects import OneRoute  # the registry seam: one model the gateway believes ready

EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'


class HangingServer:
    """Takes the request; with ``first_event``, sends 200 and one SSE event; then sends nothing
    more and keeps the connection open (a node cut off). ``answered`` is set when it hangs."""

    def __init__(self, first_event: bool) -> None:
        self.first_event = first_event
        self.answered = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.open.append(conn)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            if self.first_event:
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                             + b"%x\r\n%s\r\n" % (len(EVENT), EVENT))
            self.answered.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.open:
            conn.close()


class LosingLifecycle:
    """The scheduler's side, faked: every request is let through at once; ``lose()`` (from the
    test's thread) reports the model's node lost to whoever serves it, as Lifecycle does."""

    def __init__(self, server: HangingServer) -> None:
        self.server = server
        self.released = 0
        self.serving: list = []

    def lose(self) -> None:
        why = "its node node3 cannot be reached (its engine stopped, or it is cut off)"
        for loop, ticket in self.serving:
            loop.call_soon_threadsafe(ticket.on_lost, why)

    def knows(self, name: str) -> bool:
        return name == "m"

    async def stop(self) -> None: ...

    class client:
        @staticmethod
        async def aclose() -> None: ...

    def request(self, name: str):
        lifecycle = self
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)

        class Ticket:
            on_lost = None

            def __init__(self) -> None:
                self.future = future

            async def wait(self) -> None:
                await asyncio.shield(future)

            def progress(self):
                return None

            def release(self) -> None:
                lifecycle.released += 1

            def wait_span(self):
                return 0.0, 0.0, None
        ticket = Ticket()
        self.serving.append((asyncio.get_running_loop(), ticket))
        return ticket


@pytest.fixture
def losing(tmp_path: Path):
    made: list[HangingServer] = []

    def make(first_event: bool) -> tuple[LosingLifecycle, TestClient]:
        server = HangingServer(first_event)
        made.append(server)
        app = create_app(GatewaySettings(upstreams_file=tmp_path / "none.yaml", first_byte_timeout_s=60),
                         registry=OneRoute(server.url))
        lifecycle = LosingLifecycle(server)
        app.state.gateway.lifecycle = lifecycle
        return lifecycle, TestClient(app)
    yield make
    for server in made:
        server.close()


def test_lost_before_its_first_byte_is_a_503_with_retry_after(losing):
    lifecycle, client = losing(first_event=False)
    began = time.monotonic()
    # Lost once the server has the request (and hangs on it).
    threading.Thread(target=lambda: lifecycle.server.answered.wait(10) and lifecycle.lose(), daemon=True).start()
    with client:
        answer = client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert time.monotonic() - began < 5  # not the 60 s first-byte timeout, nor TCP's minutes
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5", answer.text
    error = answer.json()["error"]
    assert error["code"] == "model_node_lost" and "node3" in error["message"]
    assert lifecycle.released == 1


def test_lost_mid_stream_ends_the_stream_with_an_error_event(losing):
    lifecycle, client = losing(first_event=True)
    began = time.monotonic()
    with client, client.stream("POST", "/v1/chat/completions",
                               json={"model": "m", "messages": [], "stream": True}) as answer:
        chunks = answer.iter_bytes()
        first = next(chunks)
        assert answer.status_code == 200 and first.startswith(EVENT)
        lifecycle.lose()  # the first event is the client's: lost now, mid-stream
        text = (first + b"".join(chunks)).decode()
    assert time.monotonic() - began < 5
    assert "event: error\n" in text
    assert json.loads(text.rsplit("data: ", 1)[1])["error"]["code"] == "model_node_lost"
    assert lifecycle.released == 1
