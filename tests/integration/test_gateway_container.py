"""The gateway in its container, started with compose as `make up` does (real Docker engine),
serving a static upstream alongside the orchestrator's (empty) model set."""

from __future__ import annotations

import httpx
import openai
import pytest

from support.gateway import write_upstreams
from support.stack import Stack, require_docker

require_docker()
pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # The bridge deployment (Docker Desktop's, and LLAMADOCK_NETWORK=bridge): a published port.
    # The e2e tests run what this host detects, the host network on a Linux engine.
    stack = Stack(tmp_path_factory.mktemp("stack"), env={"LLAMADOCK_NETWORK": "bridge"})
    write_upstreams(stack.config / "upstreams.yaml", {
        # Nothing listens there inside the container: a declared model that is down.
        "ghost": {"url": "http://127.0.0.1:9", "aliases": ["llamacpp:ghost"]},
    })
    (stack.config / "upstreams.yaml").chmod(0o644)
    try:
        stack.compose("up", "-d", "--build", "--wait", "--wait-timeout", "180")
        yield stack
    finally:
        stack.force_down()


def test_gateway_container_serves_the_api(stack):
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)
    (ghost,) = client.models.list().data
    assert ghost.id == "ghost" and ghost.state == "stopped"
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="llamacpp:ghost", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 503 and raised.value.body["code"] == "model_not_ready"
    gpu = httpx.get(stack.url + "/gpu", timeout=10).json()
    assert gpu["available"] is False and gpu["reason"]
    status = httpx.get(stack.url + "/status", timeout=10).json()
    assert status["orchestrator_error"] is None
    assert httpx.get(stack.url + "/docs", timeout=10).status_code == 200
