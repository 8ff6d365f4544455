"""The swarm backend's own faults, on a real single-node swarm: the orchestrator killed while it
places a model, and the manager's engine restarted with a model running. Each time the state is
rebuilt from Swarm (the services and their labels): one service per model, nothing orphaned, the
catalog as it was, and the model served again; clients meanwhile see 200, a 503 with Retry-After,
or a refused connection (the port closed), never a hang or another error.

The engine restart stops every container on the machine, so that test holds the Docker lock
exclusively, as tests/faults/test_docker_daemon.py does (deselect with -m 'not docker_daemon')."""

from __future__ import annotations

import shutil
import uuid

import httpx
import pytest

from support.daemon import engine_up, restart_engine_under, start_engine
from support.faults import RequestStream, sigkill, summarize, unexpected
from support.stack import Stack, local_llama_image, require_docker
from support.swarm import sh, single_node_swarm
from support.waiting import wait_until

require_docker()
pytestmark = pytest.mark.docker

RECOVERY_LIMIT_S = 120


def swarm_stack(tmp_path_factory, tiny_models, name: str):
    network = f"llamadock-test-{uuid.uuid4().hex[:8]}"
    stack = Stack(tmp_path_factory.mktemp(name), llama_image=local_llama_image(),
                  env={"LLAMADOCK_BACKEND": "swarm", "LLAMADOCK_SWARM_NETWORK": network, "LLAMADOCK_NETWORK": "auto"})
    shutil.copy(tiny_models["tiny-a"], stack.models / "tiny.gguf")
    return stack, network


def services(stack: Stack, model: str = "tiny") -> list[str]:
    return sh("docker", "service", "ls", "-q", "--filter", f"label=io.llamadock.project={stack.project}",
              "--filter", f"label=io.llamadock.model={model}").split()


def task_containers(stack: Stack, model: str = "tiny") -> list[str]:
    """The running containers of the model's tasks (not the node agent's)."""
    return sh("docker", "ps", "-aq", "--filter", f"label=io.llamadock.swarm-project={stack.project}",
              "--filter", f"label=io.llamadock.model={model}", "--filter", "status=running").split()


def chat(client: httpx.Client, stack: Stack) -> httpx.Response:
    return client.post(stack.url + "/v1/chat/completions",
                       json={"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})


def test_orchestrator_killed_mid_placement_adopts_the_service_and_serves(tmp_path_factory, tiny_models, fault_report):
    stack, network = swarm_stack(tmp_path_factory, tiny_models, "swarm-kill")
    with single_node_swarm(network, stack.models, 3072, stack.project):
        try:
            stack.run("make", "up")
            stack.admin.post("/admin/models?start=false", json={"name": "tiny", "model": "tiny.gguf",
                                                                "ctx_size": 512}).raise_for_status()
            catalog = (stack.config / "models.yaml").read_bytes()
            # The first request places the model: the orchestrator creates its service, and is
            # killed as soon as the service exists (its task still starting).
            stream = RequestStream(lambda c: chat(c, stack), pause=0.2)
            stream.start()
            try:
                wait_until(lambda: services(stack), 60, "the model's service to be created")
                killed = sigkill(f"{stack.project}-orchestrator-1")  # as a crash: its restart policy brings it back
                back = wait_until(lambda: stream.first_success_after(killed), RECOVERY_LIMIT_S,
                                  "the model to be served after the orchestrator was killed")
                wait_until(lambda: stream.successes_since(back.sent) >= 3, 30, "a steady stream again")
            finally:
                outcomes = stream.stop()
            bad = unexpected(outcomes)
            assert bad == [], [(o.status, o.error, o.body[:200]) for o in bad]
            assert (stack.config / "models.yaml").read_bytes() == catalog
            assert len(services(stack)) == 1 and len(task_containers(stack)) == 1  # adopted, never doubled
            fault_report("orchestrator killed mid-placement (swarm)", str(summarize(outcomes)),
                         back.done - killed, "the service adopted: one service, one task")
        finally:
            stack.force_down()


@pytest.mark.docker_daemon
def test_manager_engine_restart_rebuilds_from_swarm(exclusive, tmp_path_factory, tiny_models, fault_report):
    stack, network = swarm_stack(tmp_path_factory, tiny_models, "swarm-daemon")
    with single_node_swarm(network, stack.models, 3072, stack.project):
        try:
            stack.run("make", "up")
            stack.admin.post("/admin/models", json={"name": "tiny", "model": "tiny.gguf", "ctx_size": 512}
                             ).raise_for_status()
            catalog = (stack.config / "models.yaml").read_bytes()
            [service] = services(stack)
            stream = RequestStream(lambda c: chat(c, stack), pause=0.2)
            stream.start()
            restart = restart_engine_under(stream, "the model to be served again after the manager's engine "
                                           "restarted", RECOVERY_LIMIT_S)
            engine_back, back, outcomes = restart.back, restart.served, restart.outcomes
            after = [o for o in outcomes if o.sent >= engine_back]
            bad = unexpected(after)
            assert bad == [], [(o.status, o.error, o.body[:200]) for o in bad]
            assert sh("docker", "info", "--format", "{{.Swarm.LocalNodeState}}") == "active"
            assert (stack.config / "models.yaml").read_bytes() == catalog
            assert services(stack) == [service]  # the same service, from Swarm's state
            wait_until(lambda: len(task_containers(stack)) == 1, 30, "one running task container")
            fault_report("manager's engine restarted (swarm)", str(summarize(after)), back.done - engine_back,
                         "the same service; its task restarted by Swarm")
        finally:
            if not engine_up():
                start_engine()
            stack.force_down()
