"""Before the gateway has heard the orchestrator's model list, it does not know which
models exist: every answer that depends on the list is 503 with Retry-After (which SDKs
retry), never 404, and /health says it is still starting. The orchestrator here is a
real closed port, as during `docker compose restart`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from support.net import free_port


@pytest.fixture
def gateway(tmp_path):
    settings = GatewaySettings(orchestrator_url=f"http://127.0.0.1:{free_port()}", admin_token="t",
                               upstreams_file=tmp_path / "none.yaml")
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/chat/completions", {"model": "tiny", "messages": []}),
    ("POST", "/v1/messages", {"model": "tiny", "max_tokens": 1, "messages": []}),
    ("POST", "/v1/rerank", {"model": "tiny"}),
    ("GET", "/v1/props?model=tiny", None),
    ("GET", "/upstream/tiny/props", None),
    ("GET", "/v1/models/tiny", None),
    ("GET", "/v1/models", None),
])
def test_no_404_before_the_model_list_is_known(gateway, method, path, body):
    response = gateway.request(method, path, json=body)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    error = response.json()["error"]
    assert error["code"] == "model_list_pending" and "orchestrator unreachable" in error["message"]


def test_health_says_starting_until_the_list_is_known(gateway):
    response = gateway.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "starting"


def test_a_bad_body_is_still_the_clients_mistake(gateway):
    assert gateway.post("/v1/chat/completions", content=b'["stream"]').status_code == 400



def test_while_the_orchestrator_is_away_an_unlisted_name_is_not_a_404():
    # A listing arrived before the orchestrator went away (a restart): the last view stays in
    # use, but a model added just before the crash may be missing from it.
    from types import SimpleNamespace

    from common.errors import ApiError
    from gateway.proxy.exchange import resolve
    from gateway.routes.orchestrated import OrchestratorRegistry

    registry = OrchestratorRegistry("http://127.0.0.1:9", "t")  # never started: no background poll
    ctx = SimpleNamespace(registry=registry)
    registry.synced, registry.error = True, "orchestrator unreachable: connection refused"
    with pytest.raises(ApiError) as away:
        resolve(ctx, "added-just-before")
    assert away.value.status == 503 and away.value.code == "model_list_pending"
    registry.error = None  # it answers again, and its list lacks the name: unknown
    with pytest.raises(ApiError) as unknown:
        resolve(ctx, "added-just-before")
    assert unknown.value.status == 404
