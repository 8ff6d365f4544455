"""The contract between the services: what the orchestrator serves reads back, field for field,
as the types the gateway and the CLI parse it into; the gateway forwards an admin body as sent
and shows the orchestrator's own validation error. Both services are real FastAPI apps here
(the orchestrator on a real port, in uvicorn); only the Docker side of the orchestrator is a stub."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from contract.errors import error_detail
from contract.adding import AddCheck, Added
from contract.listing import InstanceInfo, Listing, MemoryEstimate, ModelState, ModelStatus
from gateway.app import create_app as create_gateway
from gateway.settings import GatewaySettings
from orchestrator.app import create_app as create_orchestrator
from orchestrator.settings import OrchestratorSettings
from support.listing import listing, status
from support.net import free_port
from support.waiting import wait_until

TOKEN = "t"


class Manager:
    """What the orchestrator's app asks of its ModelManager, without Docker."""

    def __init__(self, served: Listing) -> None:
        self.listing = served
        self.host = SimpleNamespace(kind="linux", warnings=())
        self.added: list = []

    async def refresh(self) -> Listing:
        return self.listing

    async def wait_change(self, after: int, timeout: float) -> Listing:
        return self.listing

    async def start(self, name, placement=None) -> ModelStatus:
        return self.listing.find(name)

    async def add(self, spec, replace=False):
        self.added.append(spec)
        return self.listing.models[0], True

    async def check(self, spec, replace=False):
        return AddCheck(spec=spec, need_bytes=int(spec.memory) if spec.memory else None)

    async def declare(self, spec, replace=False):
        self.added.append(spec)
        return self.listing.models[0], True

    async def status(self, name):
        return self.listing.find(name)


SERVED = listing(
    status("tiny", "ready", url="http://llamadock-model-tiny:8080", pids=[4242], need_bytes=300 * 2**20,
           estimate={"weights_bytes": 200 * 2**20, "total_bytes": 300 * 2**20}, aliases=["gpt-4o-mini"],
           memory=None, ctx_size=8192, gpus=[0], ttl=30),
    status("gone", "failed", reason="exited with code 1"),
    version=41,
).model_copy(update={"available": ["other.gguf"]})
SERVED.models[0] = SERVED.models[0].model_copy(update={"instance": InstanceInfo(
    id="0123456789ab", name="llamadock-model-tiny", state="running", health="healthy", image="llama:cpu")})


@pytest.fixture
def orchestrator():
    """The orchestrator's app in uvicorn on a free port."""
    port = free_port()
    manager = Manager(SERVED)
    app = create_orchestrator(OrchestratorSettings(admin_token=TOKEN), manager)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "the orchestrator app to listen")
    yield f"http://127.0.0.1:{port}", manager
    server.should_exit = True
    thread.join(10)


def test_the_listing_reads_back_as_served(orchestrator):
    url, _ = orchestrator
    answer = httpx.get(f"{url}/models", headers={"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    parsed = Listing.model_validate_json(answer.content)
    assert parsed == SERVED
    tiny = parsed.find("tiny")
    assert tiny.state is ModelState.READY and tiny.spec.gpus == (0,) and tiny.spec.ctx_size == 8192
    assert tiny.estimate == MemoryEstimate(weights_bytes=200 * 2**20, total_bytes=300 * 2**20)
    assert tiny.instance.health == "healthy" and parsed.available == ["other.gguf"]


def test_a_start_answer_carries_the_listing_version(orchestrator):
    url, _ = orchestrator
    answer = httpx.post(f"{url}/models/tiny/start", headers={"authorization": f"Bearer {TOKEN}"})
    started = ModelStatus.model_validate_json(answer.content)
    assert (started.name, started.listing_version) == ("tiny", 41)


def test_an_unknown_state_reads_as_failed_never_ready():
    raw = SERVED.model_dump(mode="json")
    raw["models"][0]["state"] = "warming-up"  # a newer orchestrator's word
    assert Listing.model_validate(raw).find("tiny").state is ModelState.FAILED


@pytest.fixture
def gateway(orchestrator, tmp_path):
    url, manager = orchestrator
    settings = GatewaySettings(orchestrator_url=url, admin_token=TOKEN, upstreams_file=tmp_path / "none.yaml")
    with TestClient(create_gateway(settings), raise_server_exceptions=False) as client:
        yield client, manager


@pytest.mark.parametrize("body, field, rule", [
    ({"name": "x", "model": "../etc/passwd"}, "model", "must stay inside models/"),
    ({"name": "x", "model": "a.gguf", "args": ["--port", "1"]}, "args", "--port is managed by llamadock"),
    ({"name": "x", "model": "a.gguf", "parallel": 0}, "parallel", "greater than or equal to 1"),
    ({"name": "x"}, None, "give exactly one source"),
])
def test_the_gateway_shows_the_orchestrators_own_validation_error(gateway, body, field, rule):
    client, manager = gateway
    answer = client.post("/admin/models", json=body, headers={"authorization": f"Bearer {TOKEN}"})
    error = error_detail(answer.content)
    assert answer.status_code == 400 and error.code == "invalid_spec", answer.text
    assert error.message.startswith("Invalid model spec") and rule in error.message
    if field:
        assert error.param == field
    assert manager.added == []  # refused before anything was created


def test_a_body_that_is_not_json_is_the_orchestrators_400_too(gateway):
    client, manager = gateway
    answer = client.post("/admin/models", content=b"{not json", headers={"authorization": f"Bearer {TOKEN}",
                                                                        "content-type": "application/json"})
    assert answer.status_code == 400 and error_detail(answer.content).code == "invalid_spec"
    assert manager.added == []


def test_a_valid_spec_is_forwarded_as_sent(gateway):
    client, manager = gateway
    answer = client.post("/admin/models", json={"name": "tiny", "model": "tiny.gguf", "memory": "6GiB"},
                         headers={"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 201, answer.text
    added = Added.model_validate_json(answer.content)
    assert added.model.name == "tiny" and added.created and added.started and added.stopped == []
    (spec,) = manager.added
    assert (spec.name, spec.model, int(spec.memory)) == ("tiny", "tiny.gguf", 6 * 2**30)


def test_the_gateway_serves_its_status_as_the_cli_reads_it(gateway):
    from contract.status import GatewayStatus
    client, _ = gateway
    wait_until(lambda: client.get("/health").status_code == 200, 10, "the gateway to hear the listing")
    status_view = GatewayStatus.model_validate_json(client.get("/status").content)
    assert {m.id: m.state for m in status_view.models} == {"tiny": ModelState.READY, "gone": ModelState.FAILED}
    assert status_view.scheduler is not None and status_view.scheduler.models["tiny"].ctx_size == 8192
