"""The swarm backend on a real single-node Docker Swarm, driven through the Runtime seam: a tiny
model as a service on an attachable overlay (made by scripts/swarm-init.sh), healthy, reached by
its service name from a container on the overlay, its spec updated in place, stopped, started,
adopted by a second runtime, removed; a task its node cannot run says why.

The host engine is put in a swarm only when it is in none, and leaves it again at the end; the
overlay is this module's own. This process is on the host, which cannot reach overlay addresses,
so what a container on the overlay sees is asked of one (the llama-server image has curl).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

from support.stack import REPO, local_llama_image, require_docker
from support.swarm import sh, single_node_swarm
from support.waiting import wait_until, wait_until_async

require_docker()

import docker  # noqa: E402

from common.errors import ApiError  # noqa: E402
from contract.listing import InstanceState  # noqa: E402
from contract.placement import Placement  # noqa: E402
from contract.pools import LOCAL_NODE  # noqa: E402
from contract.spec import ModelSpec  # noqa: E402
from orchestrator.backends.docker.containers import LABEL_MODEL  # noqa: E402
from orchestrator.backends.runtime import Change  # noqa: E402
from orchestrator.backends.swarm import swarm_runtime  # noqa: E402
from orchestrator.backends.swarm.services import LABEL_SERVICE_PROJECT  # noqa: E402
from orchestrator.settings import OrchestratorSettings  # noqa: E402

pytestmark = pytest.mark.docker

MEMORY_MB = 3072
READY_S = 60


class Swarm:
    def __init__(self, network: str, models: Path, image: str) -> None:
        self.network, self.models, self.image = network, models, image
        self.client = docker.from_env()

    def settings(self, project: str, **overrides) -> OrchestratorSettings:
        values = dict(admin_token="t", project=project, models_host_dir=str(self.models), swarm_network=self.network,
                      llama_image_cpu=self.image, gpu="none", stop_grace_s=5)
        return OrchestratorSettings(**(values | overrides))

    def on_overlay(self, *curl_args: str) -> str:
        """curl, from a container attached to the overlay network."""
        return sh("docker", "run", "--rm", "--network", self.network, "--entrypoint", "curl", self.image,
                  "-fsS", "--max-time", "5", *curl_args)

    def containers(self, model: str, project: str) -> list[str]:
        return [c.name for c in self.client.containers.list(all=True, filters={
            "label": [f"{LABEL_MODEL}={model}", f"{LABEL_SERVICE_PROJECT}={project}"]})]


@pytest.fixture(scope="module")
def swarm(tiny_models, tmp_path_factory) -> Swarm:
    image = local_llama_image()
    models = tmp_path_factory.mktemp("swarm-models")
    shutil.copy(tiny_models["tiny-a"], models / "tiny-a.gguf")
    network = f"llamadock-test-{uuid.uuid4().hex[:8]}"
    with single_node_swarm(network, models, MEMORY_MB, "llamadock-swarm-test-"):
        # Run again: nothing to do, nothing changes.
        sh("bash", str(REPO / "scripts" / "swarm-init.sh"), env=os.environ | {
            "LLAMADOCK_SWARM_NETWORK": network,
            "LLAMADOCK_MODELS_DIR": str(models)})
        assert sh("docker", "network", "inspect", network, "--format", "{{.Driver}} {{.Attachable}} {{.Scope}}") == \
            "overlay true swarm"
        assert (models / ".cache").is_dir()
        yield Swarm(network, models, image)


async def ready(runtime, instance_id: str, what: str, **expect):
    """The instance once Swarm's healthcheck passed (its task "running"), as ``expect`` says."""
    async def seen():
        now = await runtime.inspect(instance_id)
        return now if now.ready and all(getattr(now, k) == v for k, v in expect.items()) else None
    def detail() -> str:
        return sh("docker", "service", "ps", "--no-trunc", instance_id, check=False) + "\n" + \
            sh("docker", "service", "logs", "--tail", "20", instance_id, check=False)
    return await wait_until_async(seen, READY_S, what, every=0.25, detail=detail)


async def test_a_model_through_its_whole_life_on_a_swarm(swarm: Swarm, capsys):
    project = f"llamadock-swarm-test-{uuid.uuid4().hex[:6]}"
    settings = swarm.settings(project)
    runtime = swarm_runtime(settings)
    changes = []
    runtime.on_change(changes.append)
    await runtime.open()
    began = time.monotonic()
    spec = ModelSpec(name="tiny-a", model="tiny-a.gguf", ctx_size=256)
    here = Placement(node=LOCAL_NODE, gpus=(0,))  # the manager's node, as the scheduler names it
    try:
        # A node that is not in the swarm is refused before anything is made, naming those that are.
        with pytest.raises(ApiError) as refused:
            runtime.fingerprint(spec, Placement(node="box9", gpus=(0,)))
        assert (refused.value.status, refused.value.param) == (400, "node") and LOCAL_NODE in refused.value.message

        await runtime.ensure_image(spec)
        made = await runtime.run(spec, here)
        first = await ready(runtime, made.id, "tiny-a healthy on the swarm")
        t_ready = time.monotonic() - began
        assert (first.model, first.node, first.state) == ("tiny-a", LOCAL_NODE, InstanceState.RUNNING)
        assert first.spec == spec and first.spec_hash == runtime.fingerprint(spec, here).spec_hash
        assert first.placement == runtime.fingerprint(spec, here).placement
        assert first.pids and ipaddress.ip_address(urlparse(first.probe_url).hostname)  # the task's, on the overlay
        service = runtime.client.services.get(made.id)
        assert service.attrs["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
        hostname = sh("docker", "node", "inspect", "self", "--format", "{{.Description.Hostname}}")
        assert service.attrs["Spec"]["TaskTemplate"]["Placement"]["Constraints"] == [f"node.hostname=={hostname}"]

        # On the overlay: by the service's name (what dnsrr makes resolvable) and at the probed address.
        name = first.name
        assert json.loads(swarm.on_overlay(f"http://{name}:8080/health")) == {"status": "ok"}
        assert json.loads(swarm.on_overlay(f"{first.probe_url}/v1/models"))["data"][0]["id"] == "tiny-a"
        assert json.loads(swarm.on_overlay(f"http://{name}:8080/props"))["default_generation_settings"]["n_ctx"] == 256

        # The listing's view: one instance, on the one node's budget from its label; the poller told.
        assert [i.id for i in await runtime.instances()] == [made.id]
        pools = runtime.pools(await runtime.instances())
        assert [(p.id.key, p.total_bytes, p.models) for p in pools] == [("budget", MEMORY_MB * 2**20, ["tiny-a"])]
        await wait_until_async(lambda: any(c.instance_id == made.id for c in changes), 10, "a change for tiny-a")
        tail = await runtime.log_tail(first, 200)
        assert any("listening" in line for line in tail), tail
        assert b"listening" in b"".join([chunk async for chunk in await runtime.logs(first, 200, follow=False)])

        # A restarted orchestrator adopts what runs: the same service, spec and hash from the labels.
        adopted = [i for i in await swarm_runtime(settings).instances()]
        assert [(i.id, i.spec, i.spec_hash, i.placement) for i in adopted] == \
            [(first.id, spec, first.spec_hash, first.placement)]

        # A spec change updates the service in place: same id, a new hash, the new context size.
        bigger = spec.model_copy(update={"ctx_size": 512})
        new_hash = runtime.fingerprint(bigger, here).spec_hash
        assert new_hash != first.spec_hash
        t0 = time.monotonic()
        updated = await runtime.replace(first, bigger, here)
        assert updated.id == first.id
        second = await ready(runtime, first.id, "tiny-a updated", spec_hash=new_hash)
        t_update = time.monotonic() - t0
        assert second.spec == bigger
        assert json.loads(swarm.on_overlay(f"http://{name}:8080/props"))["default_generation_settings"]["n_ctx"] == 512
        # One model service (the node agent's, made as the runtime opened, carries no model label).
        assert len(runtime.client.services.list(filters={"label": [f"io.llamadock.project={project}",
                                                                   LABEL_MODEL]})) == 1

        # Stop: scaled to 0, kept; no container of it runs.
        t0 = time.monotonic()
        await runtime.stop(second)
        t_stop = time.monotonic() - t0
        stopped = await runtime.inspect(first.id)
        assert stopped.state is InstanceState.EXITED and stopped.url is None and not stopped.ready
        assert runtime.client.services.get(first.id).attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
        assert not runtime.client.containers.list(filters={"label": f"{LABEL_MODEL}=tiny-a", "status": "running"})
        assert runtime.pools([stopped])[0].models == []

        # Start: the same service again, the same spec.
        t0 = time.monotonic()
        await runtime.start(stopped)
        again = await ready(runtime, first.id, "tiny-a started again", spec_hash=new_hash)
        t_start = time.monotonic() - t0
        assert again.started_at > second.started_at

        # Restart: a new task of the same spec, in place.
        t0 = time.monotonic()
        await runtime.restart(again)
        bounced = await wait_until_async(lambda: _restarted(runtime, again), READY_S, "tiny-a restarted", every=0.25)
        t_restart = time.monotonic() - t0
        assert (bounced.id, bounced.spec_hash) == (first.id, new_hash)

        # A crash: the poller reports the service down, and Swarm's restart policy brings it back.
        changes.clear()
        [container] = runtime.client.containers.list(filters={"label": f"{LABEL_MODEL}=tiny-a", "status": "running"})
        t0 = time.monotonic()
        container.kill()
        await wait_until_async(lambda: Change(first.id, down=True) in changes, 15, "the poller seeing tiny-a down")
        t_seen = time.monotonic() - t0
        back = await wait_until_async(lambda: _restarted(runtime, bounced), READY_S, "tiny-a back after its crash",
                                      every=0.25)
        t_back = time.monotonic() - t0
        assert back.restart_count == 1 and back.id == first.id

        # Remove: the service goes, its containers too.
        await runtime.remove("tiny-a")
        assert await runtime.instances() == []
        wait_until(lambda: not swarm.containers("tiny-a", project), 30, "tiny-a's containers removed")
        await runtime.remove("tiny-a")  # nothing there: nothing to do
    finally:
        await runtime.remove("tiny-a")
        await runtime.close()
    total = time.monotonic() - began
    # Its output copied into the orchestrator's own (what `docker compose logs` shows), by model and node.
    assert "tiny-a@local | " in capsys.readouterr().out
    with capsys.disabled():
        print(f"\nswarm: ready {t_ready:.1f} s, update {t_update:.1f} s, stop {t_stop:.1f} s, start {t_start:.1f} s, "
              f"restart {t_restart:.1f} s, crash seen {t_seen:.1f} s and back {t_back:.1f} s, "
              f"whole life {total:.1f} s")
    assert total < 90


async def test_a_task_its_node_cannot_run_says_why(swarm: Swarm):
    """A node without the models directory rejects the task: the instance exits, and its log tail
    carries Swarm's reason (what a failed start is reported with)."""
    project = f"llamadock-swarm-test-{uuid.uuid4().hex[:6]}"
    missing = f"/nonexistent-{uuid.uuid4().hex[:6]}/models"
    runtime = swarm_runtime(swarm.settings(project, models_host_dir=missing, model_logs="off"))
    try:
        made = await runtime.run(ModelSpec(name="tiny-a", model="tiny-a.gguf"))
        failed = await wait_until_async(
            lambda: _failed(runtime, made.id), 30, "the task's rejection", every=0.25)
        tail = await runtime.log_tail(failed, 20)
        assert tail and tail[-1].startswith("swarm: ") and missing in tail[-1], tail
        # Once Swarm gives up (its restart attempts spent), a start makes a new task, as a stopped
        # container's start would run it again.
        spent = await wait_until_async(lambda: _given_up(runtime, made.id), 60, "Swarm giving up", every=0.5)
        tasks = len(runtime.client.api.tasks(filters={"service": made.id}))
        await runtime.start(spent)
        wait_until(lambda: len(runtime.client.api.tasks(filters={"service": made.id})) > tasks, 15,
                   "a new task after the start")
    finally:
        await runtime.remove("tiny-a")
        await runtime.close()
    assert await runtime.instances() == []


async def _restarted(runtime, before):
    now = await runtime.inspect(before.id)
    return now if now.ready and now.started_at > before.started_at and now.pids != before.pids else None


async def _given_up(runtime, instance_id: str):
    now = await runtime.inspect(instance_id)
    tasks = runtime.client.api.tasks(filters={"service": instance_id})
    return now if now.state is InstanceState.EXITED and not any(t["DesiredState"] == "running" for t in tasks) else None


async def _failed(runtime, instance_id: str):
    now = await runtime.inspect(instance_id)
    return now if now.state is InstanceState.EXITED or now.restart_count > 0 else None
