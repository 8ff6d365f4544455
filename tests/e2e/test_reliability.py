"""Reliability on the real stack (real Docker engine, real llama-server containers):
no wrong 404 while the stack restarts, no slot leaked by a body the gateway cannot read,
no 5xx for a bad model name, API docs that render with no internet, the official
Anthropic client on /v1/messages. The tests share one stack with one `parallel: 1`
model, so a leaked slot would block every later request."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter

import anthropic
import httpx
import pytest

from support.stack import Stack, require_docker, running_stack
from support.waiting import wait_until

require_docker()
pytestmark = pytest.mark.docker

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 2}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    # A short queue timeout: a leaked slot shows as a refused request in seconds, not a hang.
    with running_stack(tmp_path_factory.mktemp("reliability"), tiny_models["tiny-a"], as_file="tiny.gguf",
                       add={"name": "tiny", "model": "tiny.gguf", "parallel": 1},
                       env={"LLAMADOCK_QUEUE_TIMEOUT_S": "20"}) as stack:
        yield stack


def scheduled(stack: Stack, model: str = "tiny") -> dict:
    return httpx.get(stack.url + "/status", timeout=10).json()["scheduler"]["models"][model]


def chat(stack: Stack, timeout: float = 60) -> httpx.Response:
    return httpx.post(stack.url + "/v1/chat/completions", json=CHAT, timeout=timeout)


# --- 2. a body the gateway cannot read as an object does not leak the model's slot -----------

@pytest.mark.parametrize("body", [b'["stream"]', b'"stream"', b'{"stream": true', b"\xff\xfe"])
def test_upstream_passthrough_with_any_body_releases_its_slot(stack, body):
    for _ in range(3):  # more than the model's one slot
        response = httpx.post(stack.url + "/upstream/tiny/x", content=body,
                              headers={"content-type": "application/json"}, timeout=30)
        assert response.status_code < 500, response.text  # llama-server's own answer to /x, passed through
    wait_until(lambda: scheduled(stack)["in_flight"] == 0, 10, "tiny's in_flight back to 0")
    answer = chat(stack)
    assert answer.status_code == 200, answer.text
    assert scheduled(stack)["in_flight"] == 0


@pytest.mark.parametrize("body", [b'["stream"]', b'[]', b'7'])
def test_v1_body_that_is_not_an_object_is_a_400(stack, body):
    response = httpx.post(stack.url + "/v1/chat/completions", content=body, timeout=10)
    assert response.status_code == 400 and "JSON object" in response.json()["error"]["message"]
    assert scheduled(stack)["in_flight"] == 0


# --- 3. names no model can have are the client's mistake -------------------------------------

@pytest.mark.parametrize("name", ["%0A", "a%00b", "%1B%5B2J", "x%7F", "Tiny", "%20tiny"])
@pytest.mark.parametrize("method, suffix", [("GET", ""), ("DELETE", ""), ("POST", "/restart"), ("GET", "/logs")])
def test_admin_routes_refuse_impossible_names_with_400(stack, name, method, suffix):
    response = stack.admin.request(method, f"/admin/models/{name}{suffix}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_admin_routes_still_serve_real_names(stack):
    assert stack.admin.get("/admin/models/tiny").json()["name"] == "tiny"
    assert stack.admin.get("/admin/models/nope").status_code == 404


# --- the official Anthropic client on /v1/messages ---------------------------------------------

def test_anthropic_client_messages_plain_and_streamed(stack):
    client = anthropic.Anthropic(base_url=stack.url, api_key="unused", max_retries=0, timeout=60)
    ask = {"model": "tiny", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello."}],
           "extra_body": {"temperature": 0}}  # greedy; this SDK version takes no `temperature` argument
    message = client.messages.create(**ask)
    assert message.role == "assistant" and message.content[0].type == "text"
    assert message.usage.output_tokens > 0
    with client.messages.stream(**ask) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == message.content[0].text  # greedy: the same answer, streamed
    assert final.stop_reason in ("max_tokens", "end_turn")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])


# --- 5. /docs and /redoc render with no internet ----------------------------------------------

def render(url: str) -> str:
    """The page's DOM after its scripts ran, in headless Chromium that can reach the gateway
    (loopback) and nothing else: every other host resolves nowhere, every proxy is a dead port."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (scripts/setup-test-tools.sh installs it)")
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
         "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_swagger_ui_renders_offline(stack):
    dom = render(stack.url + "/docs")
    # Swagger UI draws one "opblock" per operation, with its path: only if its script ran.
    assert "opblock" in dom and "/v1/chat/completions" in dom and "/admin/models/{name}" in dom


def test_redoc_renders_offline(stack):
    dom = render(stack.url + "/redoc")
    assert "Chat completion (stream or not)" in dom and "/v1/chat/completions" in dom


# --- 1. no 404 for a model that exists, while the stack restarts --------------------------------

class Hammer:
    """Requests in a loop on two threads (chat, and the model's entry), every answer kept."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.seen: list[tuple[str, int | str, str | None]] = []  # (what, status or error, retry-after)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(what,), daemon=True)
                         for what in ("chat", "model")]

    def _run(self, what: str) -> None:
        with httpx.Client(base_url=self.stack.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    if what == "chat":
                        response = client.post("/v1/chat/completions", json=CHAT)
                    else:
                        response = client.get("/v1/models/tiny")
                    self.seen.append((what, response.status_code, response.headers.get("retry-after")))
                except httpx.TransportError as exc:  # the gateway is down: no answer, no wrong one
                    self.seen.append((what, type(exc).__name__, None))
                    self._stop.wait(0.02)

    def __enter__(self) -> "Hammer":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def ok_since(self, mark: int) -> int:
        return sum(1 for _, status, _ in self.seen[mark:] if status == 200)


@pytest.mark.parametrize("services", [("gateway",), ()], ids=["gateway", "whole-stack"])
def test_restart_under_load_never_answers_404(stack, services):
    assert chat(stack).status_code == 200
    with Hammer(stack) as hammer:
        wait_until(lambda: hammer.ok_since(0) >= 4, 30, "requests flowing before the restart")
        started = time.monotonic()
        stack.compose("restart", *services)
        mark = len(hammer.seen)
        wait_until(lambda: hammer.ok_since(mark) >= 10, 90, "requests answered again after the restart")
        recovered_s = time.monotonic() - started
    statuses = Counter(status for _, status, _ in hammer.seen)
    print(f"restart {services or 'all'}: {dict(statuses)}; routable again {recovered_s:.1f} s after the restart began")
    assert 404 not in statuses, statuses
    server_errors = [s for s in hammer.seen if isinstance(s[1], int) and s[1] >= 500]
    assert all(status == 503 and retry for _, status, retry in server_errors), server_errors
