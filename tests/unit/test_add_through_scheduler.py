"""An add through the gateway's scheduler, with both services for real (the orchestrator's app on
the in-memory runtime, in uvicorn; the gateway's app in a TestClient) and a memory budget of
350 MiB: an add makes room the way a request does, says what it stopped, and an add that cannot
fit, or that fails to start, leaves the catalog and every model as they were."""

from __future__ import annotations

import threading

import pytest
import uvicorn
from fastapi.testclient import TestClient

from contract.adding import Added
from contract.errors import error_detail
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from orchestrator import catalog as catalog_file
from orchestrator.backends.memory import MemoryRuntime
from orchestrator.service import build
from orchestrator.settings import OrchestratorSettings
from support.net import free_port
from support.waiting import wait_until

TOKEN = "t"
ADMIN = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def stack(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.gguf").write_bytes(b"GGUF")
    catalog = tmp_path / "models.yaml"
    catalog.write_text("models:\n  pinned: {model: m.gguf, memory: 50MiB, pinned: true}\n")
    runtime = MemoryRuntime()
    port = free_port()
    app = build(OrchestratorSettings(admin_token=TOKEN, catalog_file=catalog, models_dir=tmp_path / "models",
                                     load_timeout_s=5.0), runtime)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))  # a long poll ends it
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "the orchestrator to listen")
    settings = GatewaySettings(orchestrator_url=f"http://127.0.0.1:{port}", admin_token=TOKEN,
                               upstreams_file=tmp_path / "none.yaml", memory_budget="350MiB", queue_timeout_s=10,
                               min_residency_s=0.5)  # an add waits out a residency: kept short here
    with TestClient(create_gateway(settings), raise_server_exceptions=False) as client:
        wait_until(lambda: client.get("/health").status_code == 200, 10, "the gateway to hear the listing")
        yield client, runtime, catalog
    server.should_exit = True
    thread.join(10)


def add(client, body, **params):
    return client.post("/admin/models", json=body, headers=ADMIN, params=params)


def running(runtime: MemoryRuntime) -> set[str]:
    return {i.model for i in runtime.by_id.values() if i.state == "running"}


def test_an_add_on_a_full_budget_stops_the_least_recently_used_idle_model_and_says_so(stack):
    client, runtime, catalog = stack
    wait_until(lambda: "pinned" in running(runtime), 10, "the pinned model started by reconcile")
    first = add(client, {"name": "a", "model": "m.gguf", "memory": "150MiB"})
    assert first.status_code == 201, first.text
    assert Added.model_validate_json(first.content).stopped == []
    second = add(client, {"name": "b", "model": "m.gguf", "memory": "120MiB"})
    assert second.status_code == 201, second.text
    assert Added.model_validate_json(second.content).stopped == []  # 50 + 150 + 120 fit in 350
    third = add(client, {"name": "c", "model": "m.gguf", "memory": "150MiB"})
    assert third.status_code == 201, third.text
    added = Added.model_validate_json(third.content)
    assert third.status_code == 201 and added.started and added.model.state == "ready", third.text
    assert added.stopped == ["a"]  # the least recently used, not the pinned one
    assert running(runtime) == {"pinned", "b", "c"}
    assert set(catalog_file.load_catalog(catalog)) == {"pinned", "a", "b", "c"}


def test_an_add_that_cannot_fit_is_refused_before_anything_changes(stack):
    client, runtime, catalog = stack
    wait_until(lambda: "pinned" in running(runtime), 10, "the pinned model")
    before, calls = catalog.read_text(), list(runtime.calls)
    answer = add(client, {"name": "huge", "model": "m.gguf", "memory": "400MiB"})
    error = error_detail(answer.content)
    assert answer.status_code == 409 and error.code == "model_does_not_fit", answer.text
    assert "needs 400 MiB in budget" in error.message and "free: budget 300 MiB" in error.message
    assert "pinned 50 MiB (pinned)" in error.message
    assert error.model_extra["held_by"] == ["pinned"] and error.model_extra["need_bytes"] == {"budget": 400 * 2**20}
    assert catalog.read_text() == before and runtime.calls == calls


def test_no_start_only_declares(stack):
    client, runtime, catalog = stack
    answer = add(client, {"name": "later", "model": "m.gguf", "memory": "400MiB"}, start="false")
    added = Added.model_validate_json(answer.content)
    assert answer.status_code == 201 and not added.started and added.model.state == "stopped", answer.text
    assert "later" in catalog_file.load_catalog(catalog) and runtime.instance("later") is None


def test_an_add_whose_server_fails_leaves_the_catalog_as_it_was_with_the_log_tail(stack):
    client, runtime, catalog = stack
    before = catalog.read_text()
    runtime.fail_next_start("bad", log=("loading", "error: unknown model architecture: 'nope'"))
    answer = add(client, {"name": "bad", "model": "m.gguf", "memory": "10MiB"})
    error = error_detail(answer.content)
    assert answer.status_code == 422 and error.code == "model_failed_to_start", answer.text
    assert error.log_tail[-1] == "error: unknown model architecture: 'nope'"
    assert "not added" in error.message
    assert catalog.read_text() == before and runtime.instance("bad") is None


def test_a_bad_field_is_the_orchestrators_400_and_nothing_is_written(stack):
    client, runtime, catalog = stack
    before = catalog.read_text()
    for body, field in (({"name": "x", "model": "m.gguf", "colour": "red"}, "colour"),
                        ({"name": "x", "model": "m.gguf", "ttl": "soon"}, "ttl")):
        answer = add(client, body)
        error = error_detail(answer.content)
        assert answer.status_code == 400 and error.param == field, answer.text
    assert catalog.read_text() == before
