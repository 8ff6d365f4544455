"""A model's state from `docker inspect` data (read as the runtime's neutral Instance), and the
gateway's reading of the orchestrator's listing."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from contract.listing import Listing
from gateway.routes.orchestrated import route_of
from contract.listing import ModelState
from contract.spec import ModelSpec
from orchestrator.backends.docker.status import instance_from_attrs, model_url
from orchestrator.model_state import model_state, uptime_s


def container_view(attrs: dict, network: str):
    return instance_from_attrs(attrs, network)


def attrs(status="running", health=None, exit_code=0, oom=False, restarts=0, started="2026-11-22T10:00:00.123456789Z"):
    state = {"Status": status, "ExitCode": exit_code, "OOMKilled": oom, "Pid": 4242 if status == "running" else 0,
             "StartedAt": started}
    if health:
        state["Health"] = {"Status": health}
    return {"Id": "abc123", "Name": "/llamadock-model-tiny", "RestartCount": restarts, "State": state,
            "Config": {"Image": "llama:cpu", "Labels": {"io.llamadock.model": "tiny", "io.llamadock.spec-hash": "h",
                                                        "io.llamadock.spec": '{"name": "tiny", "model": "tiny.gguf"}'}},
            "NetworkSettings": {"Networks": {"llamadock_default": {"IPAddress": "172.18.0.5"}}}}


@pytest.mark.parametrize("kw, probed, expected", [
    ({"health": "starting"}, False, ("starting", "loading the model")),
    ({"health": "starting"}, True, ("ready", None)),
    ({"health": "healthy"}, False, ("ready", None)),
    ({"health": "unhealthy"}, True, ("failed", "running, but its /health check keeps failing")),
    ({"status": "restarting", "exit_code": 1, "restarts": 2}, False,
     ("starting", "restarting after it exited with code 1 (restart 2)")),
    ({"status": "exited", "exit_code": 137}, False, ("failed", "exited with code 137 (killed)")),
    ({"status": "exited", "exit_code": 137, "oom": True}, False, ("failed", "killed: out of memory (exit code 137)")),
    ({"status": "exited", "exit_code": 0}, False, ("stopped", "stopped")),
    ({"status": "created"}, False, ("stopped", "created, not started")),
])
def test_state_from_container(kw, probed, expected):
    assert model_state(container_view(attrs(**kw), "llamadock_default"), probed) == expected


def test_no_container_is_stopped():
    assert model_state(None) == ("stopped", "not running (no container)")


def test_view_fields_url_and_uptime():
    view = container_view(attrs(health="healthy"), "llamadock_default")
    assert (view.model, view.pids, view.probe_url, view.spec) == ("tiny", (4242,), "http://172.18.0.5:8080",
                                                                  ModelSpec(name="tiny", model="tiny.gguf"))
    old = attrs()
    old["Config"]["Labels"]["io.llamadock.spec"] = '{"name": "tiny", "retired_field": 1}'
    assert container_view(old, "llamadock_default").spec is None  # a label that no longer reads: no spec, no crash
    assert model_url(view.name, "172.18.0.5", "name") == view.url == "http://llamadock-model-tiny:8080"
    assert model_url(view.name, "172.18.0.5", "ip") == "http://172.18.0.5:8080"
    assert instance_from_attrs(attrs(), "llamadock_default", url_by="ip").url == "http://172.18.0.5:8080"
    now = datetime(2026, 11, 22, 10, 1, 0, tzinfo=timezone.utc)
    assert uptime_s(view, now) == pytest.approx(59.877, abs=1e-3)
    assert uptime_s(container_view(attrs(status="exited"), "x"), now) is None


def test_gateway_reads_the_listing():
    listing = Listing.model_validate({"version": 7, "host": {"kind": "linux"}, "models": [
        {"name": "tiny", "aliases": ["gpt-4o-mini"], "state": "ready", "reason": None,
         "url": "http://llamadock-model-tiny:8080", "pids": [4242], "declared": True,
         "instance": {"id": "0123456789ab", "name": "llamadock-model-tiny", "state": "running"}},
        {"name": "gone", "aliases": [], "state": "stopped", "reason": "not running (no container)", "url": None,
         "declared": True,
         "pids": [], "instance": None},
        {"name": "odd", "declared": True, "state": "something-new", "url": None},
    ]})
    tiny, gone, odd = (route_of(m, created=100) for m in listing.models)
    assert (tiny.state, tiny.url, tiny.aliases, tiny.pids) == (ModelState.READY, "http://llamadock-model-tiny:8080",
                                                               ("gpt-4o-mini",), (4242,))
    assert gone.state is ModelState.STOPPED and gone.reason
    assert odd.state is ModelState.FAILED  # an unknown state is never routed to


def test_docker_timestamps():
    from orchestrator.backends.docker.status import docker_time
    assert docker_time("2026-11-22T10:00:00.123456789Z") == datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert docker_time("2026-11-22T10:00:00Z") == datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)
    assert docker_time("0001-01-01T00:00:00Z") is None and docker_time(None) is None and docker_time("junk") is None


@pytest.mark.parametrize("kw", [{"health": "starting"}, {"health": "healthy"}, {"status": "restarting"}])
def test_a_model_being_stopped_is_reported_stopped_never_starting(kw):
    # A listing made mid-stop that reached the gateway after the stop's answer used to say
    # "starting": the gateway took it for a start it had not asked for and started the model again.
    assert model_state(container_view(attrs(**kw), "llamadock_default"), True, stopping=True) == ("stopped", "stopping")


def test_a_stop_under_way_changes_nothing_once_the_container_is_down():
    view = container_view(attrs(status="exited", exit_code=0), "llamadock_default")
    assert model_state(view, stopping=True) == ("stopped", "stopped")
