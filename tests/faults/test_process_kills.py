"""SIGKILL of each process of the stack, and `docker compose restart`, while clients use it.

One stack for the module: `tiny` (4 slots, long context, for long streams) and `other`.
Every test leaves the stack as it found it: both models declared and routable.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest
import yaml

from support.faults import (RequestStream, containers_of, restart_count, sigkill, sse_events, stream_text,
                            summarize, unexpected)
from support.stack import Stack, local_llama_image, require_docker
from support.waiting import wait_until

require_docker()
pytestmark = pytest.mark.docker

CHAT = [{"role": "user", "content": "Say hello."}]
TINY = {"name": "tiny", "model": "tiny.gguf", "parallel": 4, "ctx_size": 16384}
OTHER = {"name": "other", "model": "other.gguf"}
RECOVERY_LIMIT_S = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    stack = Stack(tmp_path_factory.mktemp("faults"), llama_image=local_llama_image())
    shutil.copy(tiny_models["tiny-a"], stack.models / "tiny.gguf")
    shutil.copy(tiny_models["tiny-b"], stack.models / "other.gguf")
    try:
        stack.run("make", "up")
        for spec in (TINY, OTHER):
            stack.admin.post("/admin/models", json=spec).raise_for_status()
        yield stack
    finally:
        stack.force_down()


def chat(client: httpx.Client, stack: Stack, model: str = "tiny", **extra) -> httpx.Response:
    return client.post(stack.url + "/v1/chat/completions",
                       json={"model": model, "messages": CHAT, "max_tokens": 4, **extra})


def catalog_bytes(stack: Stack) -> bytes:
    return (stack.config / "models.yaml").read_bytes()


def declared(stack: Stack) -> dict:
    return (yaml.safe_load(catalog_bytes(stack)) or {}).get("models") or {}


def served(stack: Stack, model: str, within: float = 60) -> list[str]:
    """Served, as a client with the OpenAI SDK's retries sees it: a 503 with Retry-After (among them
    the model's server refusing the connection: a route gone stale a moment ago) is retried; anything else but 200 fails, a 500 or a 404 for a declared model above all.
    Returns what was retried, for the report."""
    deadline, retried = time.monotonic() + within, []
    with httpx.Client(timeout=120) as client:
        while True:
            reply = chat(client, stack, model)
            try:
                code = reply.json().get("error", {}).get("code") if reply.status_code >= 400 else None
            except ValueError:
                code = None
            transient = reply.status_code == 503 and "retry-after" in reply.headers
            if transient and time.monotonic() < deadline:
                retried.append(f"{reply.status_code} {code}")
                time.sleep(min(float(reply.headers.get("retry-after", 0.5)), 1.0))  # the client's back-off
                continue
            if reply.status_code != 200:
                logs = stack.compose("logs", "--no-color", "--tail", "40", "gateway", check=False).stdout
                raise AssertionError(f"{model}: {reply.status_code} {reply.text[:300]}\ngateway log:\n{logs}")
            return retried


def recovery(outcomes, killed: float):
    """(first failure after the kill, first success after that failure)."""
    down = next((o for o in outcomes if o.sent >= killed and not o.ok), None)
    back = next((o for o in outcomes if down and o.sent > down.sent and o.ok), None)
    return down, back


# ---- 1. the gateway ------------------------------------------------------------------------

def test_gateway_sigkill_under_a_request_stream(stack, fault_report):
    model_ids = [c.id for c in containers_of(stack.project, "tiny")]
    before = catalog_bytes(stack)
    gateway = f"{stack.project}-gateway-1"
    restarts = restart_count(gateway)
    stream = RequestStream(lambda c: chat(c, stack))
    stream.start()
    try:
        wait_until(lambda: stream.successes_since(0) >= 3, 30, "the stream to be served")
        killed = sigkill(gateway)
        back = wait_until(lambda: recovery(stream.outcomes, killed)[1], RECOVERY_LIMIT_S, "the gateway to serve again")
        wait_until(lambda: stream.successes_since(back.sent) >= 5, 30, "a steady stream again")
    finally:
        outcomes = stream.stop()
    down, back = recovery(outcomes, killed)
    assert restart_count(gateway) == restarts + 1  # compose's restart policy brought it back
    assert unexpected(outcomes) == [], summarize(unexpected(outcomes))
    # Refusals only while it was down: from the kill to the first answer after.
    assert all(o.ok for o in outcomes if o.sent > back.sent)
    assert [c.id for c in containers_of(stack.project, "tiny")] == model_ids and catalog_bytes(stack) == before
    fault_report("SIGKILL gateway (request stream)", json.dumps(summarize(o for o in outcomes if o.sent >= killed)),
                 back.done - killed, "nothing (model container kept, catalog unchanged)")


# ---- 2. the orchestrator during an add and a removal ------------------------------------------

def _orchestrator_back(stack: Stack, restarts: int) -> None:
    """Restarted by compose and answering admin calls through the gateway again."""
    name = f"{stack.project}-orchestrator-1"
    wait_until(lambda: restart_count(name) > restarts and stack.admin.get("/admin/models", timeout=5).status_code == 200,
             RECOVERY_LIMIT_S, "compose to restart the orchestrator")


def _settled(stack: Stack, name: str) -> bool:
    """After the restart's reconcile: a model the catalog does not declare has no container."""
    return name in declared(stack) or not containers_of(stack.project, name)


def _model_health(stack: Stack, name: str) -> bool:
    for container in containers_of(stack.project, name):
        container.reload()
        for network in container.attrs["NetworkSettings"]["Networks"].values():
            if network.get("IPAddress"):
                try:
                    return httpx.get(f"http://{network['IPAddress']}:8080/health", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False
    return False


@pytest.fixture
def cleanup(stack):
    """Names to remove after the test whatever happened, so one failure does not cascade."""
    names: list[str] = []
    yield names
    for name in names:
        stack.admin.delete(f"/admin/models/{name}", timeout=60)


ADD_POINTS = {
    # when to kill, as a condition polled while the add runs
    "as the request arrives": lambda stack, name: True,
    "while the model loads": lambda stack, name: bool(containers_of(stack.project, name)),
    "as the model answers": _model_health,
}


@pytest.mark.parametrize("point", ADD_POINTS)
def test_orchestrator_sigkill_during_an_add(stack, fault_report, cleanup, point):
    name = "added"
    cleanup.append(name)
    before_text, before = catalog_bytes(stack), declared(stack)
    orchestrator = f"{stack.project}-orchestrator-1"
    restarts = restart_count(orchestrator)
    answer: dict = {}

    def add() -> None:
        try:
            answer["status"] = stack.admin.post("/admin/models", json={"name": name, "model": "other.gguf"}).status_code
        except httpx.HTTPError as exc:
            answer["status"] = type(exc).__name__

    adding = threading.Thread(target=add)
    adding.start()
    wait_until(lambda: ADD_POINTS[point](stack, name), 60, f"the add to reach '{point}'", every=0.01)
    killed = sigkill(orchestrator)
    adding.join(60)
    assert not adding.is_alive(), "the add request hung after the orchestrator died"
    _orchestrator_back(stack, restarts)
    back = time.monotonic()
    wait_until(lambda: _settled(stack, name), 30, "the start-up reconcile to remove an undeclared container")

    after, retried = declared(stack), []
    if name in after:  # complete: the old catalog plus the whole new entry
        assert {k: v for k, v in after.items() if k != name} == before and after[name]["model"] == "other.gguf"
        retried = served(stack, name)
        outcome = "catalog complete with the model"
    else:
        assert catalog_bytes(stack) == before_text
        assert containers_of(stack.project, name) == []
        outcome = "catalog byte-identical, container removed"
    assert not list(stack.config.glob(".models.yaml.*")), "a temporary catalog file was left behind"
    retried += served(stack, "tiny") + served(stack, "other")
    fault_report(f"SIGKILL orchestrator during add ({point})", f"add answered {answer['status']}"
                 + (f"; then retried {retried}" if retried else ""),
                 back - killed, f"nothing: {outcome}")


REMOVE_POINTS = {
    "as the request arrives": lambda stack, name: True,
    "while the container stops": lambda stack, name: not any(
        c.status == "running" for c in containers_of(stack.project, name)),
}


@pytest.mark.parametrize("point", REMOVE_POINTS)
def test_orchestrator_sigkill_during_a_removal(stack, fault_report, cleanup, point):
    name = "removed"
    cleanup.append(name)
    assert stack.admin.post("/admin/models", json={"name": name, "model": "other.gguf"}).status_code == 201
    with_it_text, with_it = catalog_bytes(stack), declared(stack)
    orchestrator = f"{stack.project}-orchestrator-1"
    restarts = restart_count(orchestrator)
    answer: dict = {}

    def remove() -> None:
        try:
            answer["status"] = stack.admin.delete(f"/admin/models/{name}").status_code
        except httpx.HTTPError as exc:
            answer["status"] = type(exc).__name__

    removing = threading.Thread(target=remove)
    removing.start()
    wait_until(lambda: REMOVE_POINTS[point](stack, name), 60, f"the removal to reach '{point}'", every=0.01)
    killed = sigkill(orchestrator)
    removing.join(60)
    assert not removing.is_alive(), "the removal request hung after the orchestrator died"
    _orchestrator_back(stack, restarts)
    back = time.monotonic()
    wait_until(lambda: _settled(stack, name), 30, "the start-up reconcile to remove an undeclared container")

    retried = []
    if name in declared(stack):  # the removal never happened: still declared, and served on demand
        assert catalog_bytes(stack) == with_it_text
        retried = served(stack, name)
        outcome = "catalog byte-identical, model still served"
    else:
        assert declared(stack) == {k: v for k, v in with_it.items() if k != name}
        assert containers_of(stack.project, name) == []
        outcome = "removal complete"
    assert not list(stack.config.glob(".models.yaml.*")), "a temporary catalog file was left behind"
    retried += served(stack, "tiny") + served(stack, "other")
    fault_report(f"SIGKILL orchestrator during removal ({point})", f"removal answered {answer['status']}"
                 + (f"; then retried {retried}" if retried else ""),
                 back - killed, f"nothing: {outcome}")


# ---- 3. a model mid-stream --------------------------------------------------------------------

LONG = {"messages": CHAT, "max_tokens": 3000, "ignore_eos": True, "stream": True, "temperature": 0}


class Streamer(threading.Thread):
    """One streamed chat; notes when its first few events arrived and when it ended."""

    def __init__(self, stack: Stack, model: str, max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.url, self.body = stack.url + "/v1/chat/completions", {**LONG, "model": model, "max_tokens": max_tokens}
        self.flowing = threading.Event()
        self.text, self.ended, self.error = "", None, None

    def run(self) -> None:
        lines = []
        try:
            with httpx.stream("POST", self.url, json=self.body, timeout=httpx.Timeout(60, connect=5)) as reply:
                for line in reply.iter_lines():
                    lines.append(line)
                    if len([x for x in lines if x.startswith("data:")]) >= 5:
                        self.flowing.set()
        except httpx.HTTPError as exc:
            self.error = type(exc).__name__
        self.ended = time.monotonic()
        self.text = "\n".join(lines) + "\n\n"
        self.flowing.set()


def test_model_sigkill_mid_stream_under_load(stack, fault_report):
    # The answer `other` gives when nothing goes wrong (greedy, so the same every time).
    expected = Streamer(stack, "other", 2000)
    expected.run()
    assert "[DONE]" in expected.text
    # Looked up first: the kill follows the streams' start at once (on an idle machine a victim's
    # 3,900 tokens take about 4 s, and a Docker call in between ate into that).
    (container,) = containers_of(stack.project, "tiny")
    victims = [Streamer(stack, "tiny", 3900) for _ in range(4)]  # a slot's whole context (16384 / 4)
    bystander = Streamer(stack, "other", 2000)
    for s in (*victims, bystander):
        s.start()
    for s in (*victims, bystander):
        assert s.flowing.wait(60), "a stream did not start"
    assert all(s.ended is None for s in (*victims, bystander)), "a stream ended before the kill"
    killed = sigkill(container.id)
    for s in (*victims, bystander):
        s.join(60)
        assert not s.is_alive(), "a stream hung after the kill"

    ended_after = [s.ended - killed for s in victims]
    for s in victims:
        events = sse_events(s.text)
        assert s.error is None and events[-1][0] == "error", s.text[-500:]
        assert json.loads(events[-1][1])["error"]["code"] == "upstream_broken"
    assert max(ended_after) < 1.0, ended_after
    # The other model's stream, at the same time, is untouched: whole, and the same answer.
    events = sse_events(bystander.text)
    assert bystander.error is None and events[-1] == ("message", "[DONE]")
    assert all(name != "error" for name, _ in events)
    assert stream_text(events) == stream_text(sse_events(expected.text))
    # The next request is served (started again on demand, or by Docker's restart policy).
    started = time.monotonic()
    served(stack, "tiny")
    routable_s = time.monotonic() - started
    assert routable_s < RECOVERY_LIMIT_S
    fault_report("SIGKILL model mid-stream (4 streams + 1 on another model)",
                 f"4 streams ended with event: error in <= {max(ended_after):.2f} s; other model's stream complete",
                 routable_s, "the 4 killed generations (by design); nothing else",
                 error_event_s=[round(x, 3) for x in ended_after])


# ---- a model cut off the stack's network -----------------------------------------------------

def test_model_cut_off_the_network_is_a_503_then_served_again(stack, fault_report):
    """The gateway cannot reach a model it believes ready: the client gets a clean 503 with
    Retry-After in OpenAI's format (the SDK retries it), never a 500; reconnected, the model is served."""
    (container,) = containers_of(stack.project, "tiny")
    network = f"{stack.project}_default"
    stack.run("docker", "network", "disconnect", network, container.id)
    try:
        with httpx.Client(timeout=60) as client:
            refused = chat(client, stack)
    finally:
        stack.run("docker", "network", "connect", network, container.id)
    assert refused.status_code == 503 and "retry-after" in refused.headers, refused.text
    assert refused.json()["error"]["code"] == "upstream_unreachable"
    reconnected = time.monotonic()
    retried = served(stack, "tiny")
    fault_report("model cut off the network (docker network disconnect)",
                 f"{refused.status_code} {refused.json()['error']['code']}"
                 + (f"; then retried {retried}" if retried else ""), time.monotonic() - reconnected,
                 "nothing (same container, served once reconnected)")


# ---- 5. docker compose restart ------------------------------------------------------------------

def test_compose_restart_under_a_steady_stream(stack, fault_report):
    model_ids = {m: [c.id for c in containers_of(stack.project, m)] for m in ("tiny", "other")}
    before = catalog_bytes(stack)
    stream = RequestStream(lambda c: chat(c, stack))
    stream.start()
    try:
        wait_until(lambda: stream.successes_since(0) >= 3, 30, "the stream to be served")
        began = time.monotonic()
        stack.compose("restart")
        restarted = time.monotonic()
        wait_until(lambda: stream.successes_since(restarted) >= 10, 60, "a steady stream after the restart")
    finally:
        outcomes = stream.stop()
    during = [o for o in outcomes if o.sent >= began]
    bad = unexpected(outcomes)
    assert bad == [], [(o.status, o.error, o.body[:200]) for o in bad]
    failures = [o for o in during if not o.ok]
    back = next((o for o in during if o.ok and (not failures or o.sent > failures[-1].sent)), None)
    assert {m: [c.id for c in containers_of(stack.project, m)] for m in model_ids} == model_ids
    assert catalog_bytes(stack) == before
    fault_report("docker compose restart (request stream)", json.dumps(summarize(during)),
                 back.done - began, "nothing (model containers adopted, catalog unchanged)",
                 restart_command_s=round(restarted - began, 2))
