"""The Docker backend's own pure parts behind the Runtime seam: container events as changes, the
GPUs the daemon lists, the pools of the one node, the placement it accepts, the /health probe."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import pytest

from common.errors import ApiError
from contract.listing import InstanceState
from contract.placement import Placement
from contract.spec import ModelSpec
from orchestrator.backends.docker.host import HostFacts, detect_host
from orchestrator.backends.docker.runtime import DockerRuntime
from orchestrator.backends.docker.watch import change_of
from orchestrator.backends.runtime import Change, Instance
from orchestrator.settings import OrchestratorSettings

STACK = SimpleNamespace(project="p", network="n", models_dir="/m", cache_dir="/m/.cache", kv_dir=None, cpu_image="llama:cpu",
                        gpu_image="llama:cuda", user=None, log_max_size="10m", log_max_files=3)


def runtime(facts: HostFacts) -> DockerRuntime:
    return DockerRuntime(SimpleNamespace(), OrchestratorSettings(admin_token="t"), STACK, facts)


def running(model: str, placement: str = "", gpus="all") -> Instance:
    return Instance(id=model, name=model, model=model, state=InstanceState.RUNNING, spec_hash="h",
                    spec=ModelSpec(name=model, model="m.gguf", gpus=gpus), placement=placement)


@pytest.mark.parametrize("event, change", [
    ({"Action": "exec_start: curl -fsS", "id": "c1"}, None),  # a healthcheck run: no change of state
    ({"Action": "die", "id": "c1"}, Change("c1", down=True)),
    ({"status": "destroy", "id": "c1"}, Change("c1", down=True)),
    ({"Action": "start", "Actor": {"ID": "c2"}}, Change("c2")),
    ({"Action": "create", "id": "c3"}, Change("c3")),
])
def test_container_events_are_changes(event, change):
    assert change_of(event) == change


def test_the_gpus_the_daemon_lists_by_index():
    info = {"Runtimes": {"nvidia": {}}, "DiscoveredDevices": [
        {"Source": "cdi", "ID": "nvidia.com/gpu=1"}, {"Source": "cdi", "ID": "nvidia.com/gpu=0"},
        {"Source": "cdi", "ID": "nvidia.com/gpu=all"}, {"Source": "cdi", "ID": "nvidia.com/gpu=GPU-1234"}]}
    assert detect_host(info).gpu_indices == (0, 1)
    assert detect_host({"Runtimes": {"nvidia": {}}}).gpu_indices == ()  # not said: unknown


def test_the_pools_of_one_node_and_what_runs_there():
    gpus = runtime(HostFacts(gpu=True, gpu_driver="nvidia", gpu_indices=(0, 1)))
    placed = running("placed", placement=Placement(gpus=(1,)).label())
    pinned, everywhere = running("pinned", gpus=(0,)), running("everywhere")
    stopped = Instance(id="s", name="s", model="stopped", state=InstanceState.EXITED, spec_hash="h")
    pools = {p.id.key: p.models for p in gpus.pools([placed, pinned, everywhere, stopped])}
    assert pools == {"gpu0": ["everywhere", "pinned"], "gpu1": ["everywhere", "placed"]}
    # GPUs not listed by the daemon, or none: the node's memory budget.
    for facts in (HostFacts(gpu=True, gpu_driver="nvidia"), HostFacts(gpu=False)):
        assert [(p.id.key, p.models) for p in runtime(facts).pools([pinned, stopped])] == [("budget", ["pinned"])]


def test_a_placement_on_another_node_is_refused():
    docker = runtime(HostFacts(gpu=True, gpu_driver="nvidia"))
    spec = ModelSpec(name="m", model="m.gguf")
    assert docker.fingerprint(spec, Placement(gpus=(0,))).placement == Placement(gpus=(0,)).label()
    with pytest.raises(ApiError) as refused:
        docker.fingerprint(spec, Placement(node="box2", gpus=(0,)))
    assert (refused.value.status, refused.value.code, refused.value.param) == (400, "invalid_placement", "node")


def test_the_probe_asks_health_on_the_instances_address():
    asked = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200 if request.url.host == "10.0.0.2" else 503)

    async def scenario():
        docker = runtime(HostFacts(gpu=False))
        docker._probe = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        up = Instance(id="a", name="a", model="a", state=InstanceState.RUNNING, spec_hash="h",
                      probe_url="http://10.0.0.2:8080")
        loading = Instance(id="b", name="b", model="b", state=InstanceState.RUNNING, spec_hash="h",
                           probe_url="http://10.0.0.3:8080")
        unreachable = Instance(id="c", name="c", model="c", state=InstanceState.RUNNING, spec_hash="h")
        return [await docker.healthy(i) for i in (up, loading, unreachable)]
    assert asyncio.run(scenario()) == [True, False, False]
    assert asked == ["http://10.0.0.2:8080/health", "http://10.0.0.3:8080/health"]


def test_a_candidate_container_is_not_the_models_instance_and_no_model_name_can_make_one():
    from orchestrator.backends.docker.containers import candidate_name, container_name

    def attrs(name: str, model: str) -> dict:
        return {"Id": name, "Name": f"/{name}", "Config": {"Labels": {"io.llamadock.model": model}, "Image": "x"},
                "State": {"Status": "running"}}

    containers = [SimpleNamespace(attrs=attrs("p-model-a", "a")), SimpleNamespace(attrs=attrs("p-candidate-a", "a")),
                  SimpleNamespace(attrs=attrs("p-model-a-next", "a-next"))]
    docker_runtime = runtime(HostFacts(gpu=False))
    docker_runtime._list = lambda: containers
    found = asyncio.run(docker_runtime.instances())
    assert sorted(i.name for i in found) == ["p-model-a", "p-model-a-next"]
    names = {container_name("p", m) for m in ("a", "a-next", "candidate-a", "model-a")}
    assert candidate_name("p", "a") not in names  # model names are lowercase [a-z0-9._-]: never "p-candidate-…"
