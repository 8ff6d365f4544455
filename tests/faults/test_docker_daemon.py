"""The Docker daemon restarted with a model running (a host reboot's worth of fault):
afterwards the stack rebuilds its view from Docker and the catalog and serves the model
again. It stops every container on the machine, so it holds the Docker lock exclusively
(other Docker tests hold it shared); deselect it with -m 'not docker_daemon'."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from support.daemon import engine_up, restart_engine_under, start_engine
from support.faults import RequestStream, containers_of, summarize, unexpected
from support.stack import Stack, local_llama_image, require_docker

require_docker()
pytestmark = [pytest.mark.docker, pytest.mark.docker_daemon]

RECOVERY_LIMIT_S = 120


@pytest.fixture(scope="module")
def stack(exclusive, tmp_path_factory, tiny_models):
    stack = Stack(tmp_path_factory.mktemp("daemon"), llama_image=local_llama_image())
    shutil.copy(tiny_models["tiny-a"], stack.models / "tiny.gguf")
    try:
        stack.run("make", "up")
        stack.admin.post("/admin/models", json={"name": "tiny", "model": "tiny.gguf"}).raise_for_status()
        yield stack
    finally:
        if not engine_up():
            start_engine()
        stack.force_down()


def chat(client: httpx.Client, stack: Stack) -> httpx.Response:
    return client.post(stack.url + "/v1/chat/completions",
                       json={"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})


def test_daemon_restart_with_a_model_running(stack, fault_report):
    before = (stack.config / "models.yaml").read_bytes()
    stream = RequestStream(lambda c: chat(c, stack), pause=0.2)
    stream.start()
    restart = restart_engine_under(stream, "the model to be served again after the daemon restart", RECOVERY_LIMIT_S)
    began, stopped, engine_back, back, outcomes = (restart.began, restart.stopped, restart.back, restart.served,
                                                   restart.outcomes)
    # Once the engine is back, clients see connection errors or 503 + Retry-After until the
    # stack serves again; never a 404 for the model, never another 5xx.
    after = [o for o in outcomes if o.sent >= engine_back]
    bad = unexpected(after)
    assert bad == [], [(o.status, o.error, o.body[:200]) for o in bad]
    assert (stack.config / "models.yaml").read_bytes() == before
    assert len(containers_of(stack.project, "tiny")) == 1  # adopted or restarted, never doubled
    listing = stack.admin.get("/admin/models").json()["models"]
    assert [(m["name"], m["state"]) for m in listing] == [("tiny", "ready")]
    fault_report("Docker daemon restart (model running, request stream)",
                 json.dumps(summarize([o for o in outcomes if o.sent >= began])), back.done - began,
                 "nothing (catalog unchanged, one container)", daemon_stop_s=round(stopped - began, 2),
                 daemon_start_s=round(engine_back - stopped, 2), served_after_engine_back_s=round(back.done -
                                                                                                 engine_back, 2))
