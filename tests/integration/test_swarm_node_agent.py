"""The node agent on a real single-node Docker Swarm: the swarm runtime makes its global service
(the app image built from this checkout), reads its facts (the GGUF files in the models directory,
no GPU here so NVML says why, the host kind), folds them into the pools and a model's
``absent_on``, adopts the service when opened again (updates it when its spec changed), and
`make down`'s script removes it.

This process is on the host, which is on no overlay: the agent is asked at its task container's
address on docker_gwbridge (the bridge every swarm task container also has, which the host
reaches), through the runtime's ``agents.address`` seam; the request and its parsing are the
runtime's own."""

from __future__ import annotations

import os
import shutil
import time
import uuid

import pytest

from support.stack import REPO, app_image, require_docker
from support.swarm import sh, single_node_swarm
from support.waiting import wait_until, wait_until_async

require_docker()

import docker  # noqa: E402

from contract.pools import LOCAL_NODE  # noqa: E402
from contract.spec import ModelSpec  # noqa: E402
from orchestrator.backends.docker.containers import LABEL_HASH  # noqa: E402
from orchestrator.backends.swarm import swarm_runtime  # noqa: E402
from orchestrator.backends.swarm.agents import agent_service_name  # noqa: E402
from orchestrator.settings import OrchestratorSettings  # noqa: E402

pytestmark = pytest.mark.docker

PREFIX = "llamadock-agent-test-"
MEMORY_MB = 2048


@pytest.fixture(scope="module")
def swarm(tiny_models, tmp_path_factory):
    image = app_image()
    models = tmp_path_factory.mktemp("agent-models")
    shutil.copy(tiny_models["tiny-a"], models / "tiny-a.gguf")
    (models / "sub").mkdir()
    shutil.copy(tiny_models["tiny-b"], models / "sub" / "tiny-b.gguf")
    (models / ".cache").mkdir()
    (models / ".cache" / "downloaded.gguf").write_bytes(b"GGUF")  # a download: not the node's own file
    network = f"llamadock-test-{uuid.uuid4().hex[:8]}"
    with single_node_swarm(network, models, MEMORY_MB, PREFIX):
        yield network, models, image


def gwbridge_address(client: docker.DockerClient):
    """A task's address on docker_gwbridge, by its container (the host reaches that bridge)."""
    def address(task: dict) -> str | None:
        container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        attached = client.networks.get("docker_gwbridge").attrs.get("Containers") or {}
        found = attached.get(container) or {}
        return found.get("IPv4Address", "").partition("/")[0] or None
    return address


async def test_the_agent_reports_the_nodes_files_and_make_down_removes_it(swarm, tmp_path):
    network, models, image = swarm
    project = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    settings = OrchestratorSettings(admin_token="t", project=project, models_host_dir=str(models),
                                    swarm_network=network, gpu="none", app_image=image, model_logs="off",
                                    model_user=f"{os.getuid()}:{os.getgid()}")
    runtime = swarm_runtime(settings)
    client = runtime.client
    runtime.agents.address = gwbridge_address(client)
    began = time.monotonic()
    await runtime.open()
    try:
        [service] = client.services.list(filters={"label": f"io.llamadock.project={project}"})
        assert service.name == agent_service_name(project)
        assert "Global" in service.attrs["Spec"]["Mode"]
        local_id = runtime.local_id

        def facts():
            return runtime.agents.fresh().get(local_id)

        def detail() -> str:
            return sh("docker", "service", "ps", "--no-trunc", service.id, check=False) + "\n" + \
                sh("docker", "service", "logs", "--tail", "30", service.id, check=False)
        found = await wait_until_async(facts, 60, "the agent's facts of this node", every=0.2, detail=detail)
        t_facts = time.monotonic() - began
        hostname = sh("docker", "node", "inspect", "self", "--format", "{{.Description.Hostname}}")
        assert found.hostname == hostname and found.host_kind in ("linux", "wsl2")
        assert [f.name for f in found.files] == ["sub/tiny-b.gguf", "tiny-a.gguf"]
        assert found.files[1].size_bytes == (models / "tiny-a.gguf").stat().st_size
        assert found.gpus == [] and found.nvml  # no GPU on this machine: NVML says why
        assert found.memory_total_bytes and found.memory_total_bytes > 2**30

        # Into the listing: the node's budget (no GPU), the files a spec needs, the node's view.
        runtime.read_nodes()
        assert [(p.id.key, p.total_bytes) for p in runtime.pools([])] == [("budget", MEMORY_MB * 2**20)]
        assert runtime.absent_on(ModelSpec(name="a", model="tiny-a.gguf")) == {}
        assert runtime.absent_on(ModelSpec(name="b", model="sub/tiny-b.gguf")) == {}
        missing = runtime.absent_on(ModelSpec(name="x", model="nothere.gguf", mmproj="sub/tiny-b.gguf"))
        assert list(missing) == [LOCAL_NODE] and "nothere.gguf" in missing[LOCAL_NODE], missing
        [view] = runtime.node_views()
        assert (view.name, view.hostname, view.ready, view.files, view.gpus) == (LOCAL_NODE, hostname, True, 2, 0)
        assert view.nvml == found.nvml and view.facts_age_s < 5

        # A file added on the node shows within a read or two.
        shutil.copy(models / "tiny-a.gguf", models / "copy.gguf")
        await wait_until_async(lambda: (f := facts()) and f.has_file("copy.gguf"), 10, "the new file in the facts")

        # Opened again (a restarted orchestrator): the same service, not updated.
        version = client.services.get(service.id).attrs["Version"]["Index"]
        again = swarm_runtime(settings)
        again.agents.address = runtime.agents.address
        await again.open()
        await again.close()
        now = client.services.get(service.id)
        assert now.attrs["Version"]["Index"] == version and now.attrs["Spec"]["Labels"][LABEL_HASH]
        # Opened with another spec for it (another port): the same service, updated, and its new task
        # answers there.
        moved = swarm_runtime(settings.model_copy(update={"agent_port": 8090}))
        moved.agents.address = runtime.agents.address
        await moved.open()
        try:
            updated = client.services.get(service.id)
            assert updated.attrs["Version"]["Index"] > version
            assert "LLAMADOCK_AGENT_PORT=8090" in updated.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
            await wait_until_async(lambda: moved.agents.fresh().get(local_id), 60,
                                   "the updated agent's facts on port 8090", every=0.2, detail=detail)
        finally:
            await moved.close()
        # Its tasks' containers run on this node, as `make down` waits for them.
        assert client.containers.list(filters={"label": f"io.llamadock.swarm-project={project}"})
    finally:
        await runtime.close()

    # `make down`'s script: the agent service goes, and its containers with it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMADOCK_")} | {
        "COMPOSE_PROJECT_NAME": project, "LLAMADOCK_ADMIN_TOKEN": "t", "LLAMADOCK_MODELS_DIR": str(models),
        "LLAMADOCK_CONFIG_DIR": str(tmp_path / "config"), "LLAMADOCK_LOGS_DIR": str(tmp_path / "logs"),
        "LLAMADOCK_KV_CACHE_DIR": str(tmp_path / "kv")}
    t0 = time.monotonic()
    sh("bash", str(REPO / "scripts" / "down.sh"), env=env)
    t_down = time.monotonic() - t0
    assert client.services.list(filters={"label": f"io.llamadock.project={project}"}) == []
    wait_until(lambda: not client.containers.list(all=True, filters={
        "label": f"io.llamadock.swarm-project={project}"}), 10, "the agent's containers gone")
    print(f"\nagent: facts of this node {t_facts:.1f} s after open, make down {t_down:.1f} s")
