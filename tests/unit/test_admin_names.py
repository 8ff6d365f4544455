"""Admin routes check a model's name before forwarding it to the orchestrator: a name
no model can have is the client's mistake (400, OpenAI's error format), never a 500
from a URL that cannot be built. The orchestrator here is a real closed port."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from support.net import free_port

TOKEN = {"authorization": "Bearer t"}


@pytest.fixture
def gateway(tmp_path):
    settings = GatewaySettings(orchestrator_url=f"http://127.0.0.1:{free_port()}", admin_token="t",
                               upstreams_file=tmp_path / "none.yaml")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("name", ["%0A", "a%00b", "x%7F", "%1B%5B31m", "Tiny", "a%2Fb", "-x", "%C3%A9"])
@pytest.mark.parametrize("method, suffix", [("GET", ""), ("DELETE", ""), ("POST", "/restart"), ("GET", "/logs")])
def test_names_no_model_can_have_are_refused_with_400(gateway, name, method, suffix):
    response = gateway.request(method, f"/admin/models/{name}{suffix}", headers=TOKEN)
    assert response.status_code in (400, 404), response.text  # a%2Fb is another path: 404
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_a_valid_name_is_forwarded(gateway):
    response = gateway.get("/admin/models/tiny.q4_k-m", headers=TOKEN)
    assert response.status_code == 502 and response.json()["error"]["code"] == "orchestrator_unreachable"


def test_the_token_is_checked_first(gateway):
    assert gateway.get("/admin/models/%0A").status_code == 401
