"""The gateway reaches the orchestrator over a Unix socket (the stack's way: no TCP port for the
API that holds the Docker socket), still with the admin token. Real apps in real uvicorn on a
real socket; only the orchestrator's Docker side is a stub (test_contract's Manager)."""

from __future__ import annotations

import os
import socket
import stat
import threading

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from orchestrator.app import create_app as create_orchestrator
from orchestrator.listen import SOCKET_MODE, listeners, unix_listener
from orchestrator.settings import OrchestratorSettings
from support.net import free_port
from support.waiting import wait_until
from test_contract import SERVED, TOKEN, Manager


@pytest.fixture
def socket_path(tmp_path):
    # AF_UNIX paths are short (108 bytes): pytest's tmp_path can be longer.
    short = tmp_path / "s.sock"
    if len(str(short)) > 100:
        pytest.skip("temporary directory path too long for a Unix socket")
    return short


@pytest.fixture
def orchestrator(socket_path):
    settings = OrchestratorSettings(admin_token=TOKEN, orchestrator_port=free_port(),
                                    orchestrator_socket=socket_path)
    app = create_orchestrator(settings, Manager(SERVED))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": listeners(settings)}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "the orchestrator app to listen")
    yield settings
    server.should_exit = True
    thread.join(10)


def test_the_socket_is_the_owners_and_its_groups_only(orchestrator, socket_path):
    mode = os.stat(socket_path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == SOCKET_MODE


def test_the_token_is_still_checked_over_the_socket(orchestrator, socket_path):
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://orchestrator") as raw:
        assert raw.get("/models").status_code == 401
        assert raw.get("/models", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert raw.get("/health").status_code == 200
        assert raw.get("/models", headers={"authorization": f"Bearer {TOKEN}"}).json()["version"] == SERVED.version


def test_the_gateway_lists_and_forwards_over_the_socket(orchestrator, socket_path, tmp_path):
    settings = GatewaySettings(orchestrator_url="http://orchestrator", orchestrator_socket=socket_path,
                               admin_token=TOKEN, upstreams_file=tmp_path / "none.yaml")
    with TestClient(create_gateway(settings), raise_server_exceptions=False) as client:
        models = {m["id"]: m["state"] for m in client.get("/v1/models").json()["data"]}
        assert models == {"tiny": "ready", "gone": "failed"}  # the registry's long poll came over the socket
        admin = client.get("/admin/models", headers={"authorization": f"Bearer {TOKEN}"})
        assert admin.status_code == 200 and admin.json()["version"] == SERVED.version  # the admin client too


def test_a_socket_left_by_a_previous_run_is_replaced(socket_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path))
    stale.close()  # the file stays, nothing listens: as after a crash
    fresh = unix_listener(socket_path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(socket_path))  # refused on the stale one
    finally:
        fresh.close()


def test_a_file_that_is_not_a_socket_is_never_removed(tmp_path):
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    with pytest.raises(OSError):
        unix_listener(path)
    assert path.read_text() == "keep me"
