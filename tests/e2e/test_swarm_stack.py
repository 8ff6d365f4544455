"""The stack in swarm mode on a real single-node Docker Swarm, as a user drives it:
`LLAMADOCK_BACKEND=swarm make up` (gateway and orchestrator on the overlay), `make add` a tiny
GGUF model (a Swarm service on this node), a chat streamed through the gateway's published port,
`make ps` (the model's node), the node agent's facts in the listing (this node's GGUF files), then
`make down` leaving no service (the agent's too), container or network of the stack (the overlay,
the swarm's, stays). The tests run in order and share one stack.

The engine is put in a swarm only when it is in none, and leaves it at the end (support/swarm.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid

import openai
import pytest

from support.stack import Stack, local_llama_image, require_docker
from support.swarm import networks, sh, single_node_swarm
from support.waiting import wait_until

require_docker()
pytestmark = pytest.mark.docker

from contract.listing import Listing  # noqa: E402

CHAT = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    network = f"llamadock-test-{uuid.uuid4().hex[:8]}"
    stack = Stack(tmp_path_factory.mktemp("swarm-stack"), llama_image=local_llama_image(),
                  env={"LLAMADOCK_BACKEND": "swarm", "LLAMADOCK_SWARM_NETWORK": network,
                       "LLAMADOCK_NETWORK": "auto"})
    stack.network = network
    shutil.copy(tiny_models["tiny-a"], stack.models / "tiny.gguf")
    with single_node_swarm(network, stack.models, 3072, stack.project):
        try:
            yield stack
        finally:
            stack.force_down()  # containers; the services go with the swarm fixture


def services(stack: Stack) -> list[str]:
    """The stack's model services (the node agent's carries the project label, no model label)."""
    return sh("docker", "service", "ls", "-q", "--filter", f"label=io.llamadock.project={stack.project}",
              "--filter", "label=io.llamadock.model").split()


def every_service(stack: Stack) -> list[str]:
    return sh("docker", "service", "ls", "--format", "{{.Name}}", "--filter",
              f"label=io.llamadock.project={stack.project}").split()


def listing(stack: Stack) -> Listing:
    return Listing.model_validate_json(stack.admin.get("/admin/models").raise_for_status().content)


def on_overlay(stack: Stack) -> list[str]:
    """This stack's containers on the overlay (not the swarm's own load-balancer endpoint there)."""
    return [name for name in sh("docker", "network", "inspect", stack.network, "--format",
                                "{{range .Containers}}{{.Name}} {{end}}").split() if name.startswith(stack.project)]


def test_make_up_in_swarm_mode_puts_gateway_and_orchestrator_on_the_overlay(stack):
    began = time.monotonic()
    up = stack.run("make", "up")
    print(f"make up (swarm mode): {time.monotonic() - began:.1f} s", file=sys.stderr)
    assert "llamadock is up" in up.stdout, up.stdout
    attached = on_overlay(stack)
    assert {f"{stack.project}-gateway-1", f"{stack.project}-orchestrator-1"} <= set(attached), attached
    # Not on the host's network (it cannot join an overlay): the port is published on loopback.
    gateway = sh("docker", "inspect", f"{stack.project}-gateway-1", "--format", "{{.HostConfig.NetworkMode}}")
    assert gateway != "host"
    assert services(stack) == []
    # The node agent, one task per node, made by the orchestrator as it opened.
    wait_until(lambda: every_service(stack) == [f"{stack.project}-agent"], 30, "the node agent's service",
               every=0.25, detail=lambda: " ".join(every_service(stack)))


def test_make_add_runs_the_model_as_a_service_and_a_chat_streams(stack):
    began = time.monotonic()
    added = stack.run("make", "add", "NAME=tiny", "MODEL=tiny.gguf", "CTX=512")
    print(f"make add -> ready (swarm mode): {time.monotonic() - began:.1f} s", file=sys.stderr)
    assert "tiny is ready" in added.stdout, added.stdout
    [service] = services(stack)
    hostname = sh("docker", "node", "inspect", "self", "--format", "{{.Description.Hostname}}")
    tasks = sh("docker", "service", "ps", service, "--filter", "desired-state=running",
               "--format", "{{.Node}} {{.CurrentState}}").splitlines()
    # "Starting" until Swarm's own healthcheck passes: the orchestrator's probe saw the server sooner.
    assert len(tasks) == 1 and tasks[0].split()[:2] in ([hostname, "Running"], [hostname, "Starting"]), tasks
    assert sh("docker", "service", "inspect", service, "--format", "{{.Spec.EndpointSpec.Mode}}") == "dnsrr"

    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    pieces = [c for c in client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8,
                                                        temperature=0, stream=True)]
    texts = [c.choices[0].delta.content for c in pieces if c.choices and c.choices[0].delta.content is not None]
    assert len(texts) >= 2 and all(c.model == "tiny" for c in pieces), pieces
    assert [c.choices[0].finish_reason for c in pieces if c.choices][-1] in ("length", "stop")


def test_make_ps_lists_the_model_ready_with_its_node(stack):
    ps = stack.run("make", "ps").stdout.splitlines()
    header = next(line for line in ps if line.startswith("NAME"))
    tiny = next(line for line in ps if line.startswith("tiny "))
    assert " ready " in tiny and "NODE" in header, ps
    # Under NODE: the manager's node, as the pools name it (no pipe truncation: every column in full).
    assert tiny[header.index("NODE"):].split()[0] == "local", ps


def test_the_node_agent_reports_this_nodes_files_into_the_listing(stack):
    """Through the real path: the orchestrator, on the overlay, asks the agent's task there."""
    view = wait_until(lambda: next((n for n in listing(stack).nodes if n.files is not None), None), 60,
                      "the agent's facts of this node in the listing", every=0.5)
    assert (view.name, view.ready, view.files, view.gpus) == ("local", True, 1, 0) and view.nvml, view
    assert listing(stack).find("tiny").absent_on == {}  # its file is in this node's models directory


def test_make_down_leaves_no_service_container_or_network(stack):
    began = time.monotonic()
    stack.run("make", "down")
    print(f"make down (swarm mode): {time.monotonic() - began:.1f} s", file=sys.stderr)
    assert every_service(stack) == []  # the node agent's too
    assert sh("docker", "ps", "-aq", "--filter", f"label=io.llamadock.swarm-project={stack.project}") == ""
    assert stack.leftovers() == []
    # The overlay belongs to the swarm (other boxes' tasks use it): it stays, and nothing of ours is on it.
    assert stack.network in networks() and on_overlay(stack) == []
    assert subprocess.run(["docker", "service", "ls"], capture_output=True).returncode == 0
