"""The node agent's Swarm service: one task on every node (global mode) of the app image the
orchestrator itself runs, reporting that node's GPUs, GGUF files and host kind (agent/,
contract/nodes.py) on the overlay.

``agent_service_kwargs`` is pure (the keywords of ``client.services.create`` and of
``Service.update``); ``ensure_agent`` makes the service, updates it when its spec changed, or
adopts it as it is; ``NodeAgents`` is the runtime's handle on both: the service, and the reader of
its tasks' facts (node_facts.py). It carries the project label, so `make down` (scripts/down.sh) removes it with
the model services, and its tasks' containers the swarm-project label, so down's wait covers them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Callable

import docker
import docker.errors
from docker.types import EndpointSpec, Healthcheck, Mount, RestartPolicy, ServiceMode

from contract.nodes import NodeFacts

from ..docker.containers import LABEL_HASH, LABEL_PROJECT, MODELS_MOUNT, NS, StackFacts
from ..runtime import Change
from .node_facts import NodeFactsReader
from .services import LABEL_SERVICE_PROJECT
from .status import task_address

log = logging.getLogger("llamadock.orchestrator")

LABEL_AGENT = "io.llamadock.agent"  # on the service: tells it from the model services (which carry a model label)
HOST_PROC = "/host/proc"  # the host's /proc in the agent: NVML's host PIDs are looked up there


def agent_service_name(project: str) -> str:
    return f"{project}-agent"


def agent_service_kwargs(stack: StackFacts, image: str, port: int = 8089) -> dict:
    health = (f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=2)")
    kwargs = {
        "image": image,
        "command": ["python", "-m", "agent"],
        "env": [
            f"LLAMADOCK_AGENT_PORT={port}",
            f"LLAMADOCK_MODELS_DIR={MODELS_MOUNT}",
            f"LLAMADOCK_AGENT_PROC={HOST_PROC}",
            # A service template: the container's own hostname is its id, not its node's.
            "LLAMADOCK_AGENT_NODE={{.Node.Hostname}}",
            # Where the node's default runtime is nvidia, NVML sees every GPU of it; on a node
            # without, nothing is injected and the agent says why it read none.
            "NVIDIA_VISIBLE_DEVICES=all",
            "NVIDIA_DRIVER_CAPABILITIES=utility",
        ],
        # The models at the same path as in the model services, so a file named there is one found here.
        "mounts": [Mount(MODELS_MOUNT, stack.models_dir, type="bind", read_only=True),
                   Mount(HOST_PROC, "/proc", type="bind", read_only=True)],
        "networks": [stack.network],
        "endpoint_spec": EndpointSpec(mode="dnsrr"),  # no virtual IP: the orchestrator asks each task by address
        "mode": ServiceMode("global"),
        # The image's own check asks the gateway's port; this one the agent's. Swarm replaces a hung agent.
        "healthcheck": Healthcheck(test=["CMD", "python", "-c", health], interval=30 * NS, timeout=5 * NS,
                                   retries=3, start_period=30 * NS),
        "restart_policy": RestartPolicy(condition="any", delay=5 * NS),
        "log_driver": "json-file",
        "log_driver_options": {"max-size": stack.log_max_size, "max-file": str(stack.log_max_files)},
    }
    if stack.user:
        kwargs["user"] = stack.user  # reads the models directory as the model servers do
    digest = hashlib.sha256(json.dumps(kwargs, sort_keys=True).encode()).hexdigest()[:16]
    kwargs["name"] = agent_service_name(stack.project)
    kwargs["labels"] = {LABEL_PROJECT: stack.project, LABEL_AGENT: "1", LABEL_HASH: digest}
    kwargs["container_labels"] = {LABEL_SERVICE_PROJECT: stack.project, LABEL_AGENT: "1"}
    return kwargs


def ensure_agent(client: docker.DockerClient, kwargs: dict) -> str | None:
    """The agent service's id: made, updated to ``kwargs`` when its hash differs, or adopted. None
    when a service of that name is not ours (it is left alone, and the pools go without facts)."""
    name = kwargs["name"]
    found = [s for s in client.services.list(filters={"name": name}) if s.name == name]  # the filter is a prefix
    if not found:
        service = client.services.create(**kwargs)
        log.info("swarm: node agent service %s created", service.short_id)
        return service.id
    service = found[0]
    labels = (service.attrs.get("Spec") or {}).get("Labels") or {}
    if labels.get(LABEL_PROJECT) != kwargs["labels"][LABEL_PROJECT] or LABEL_AGENT not in labels:
        log.warning("swarm: a service named %s exists and is not llamadock's node agent: no per-node facts", name)
        return None
    if labels.get(LABEL_HASH) != kwargs["labels"][LABEL_HASH]:
        service.update(**kwargs)
        log.info("swarm: node agent service %s updated", service.short_id)
    return service.id


class NodeAgents:
    """The agent service of this stack and the latest facts of its tasks, by node id."""

    def __init__(self, client: docker.DockerClient, stack: StackFacts, port: int,
                 on_change: Callable[[Change], None]) -> None:
        self.client, self.stack, self.port, self.on_change = client, stack, port, on_change
        self.service_id: str | None = None
        self.reader: NodeFactsReader | None = None
        # Where a node's agent is reached: its task's address on the overlay (a seam for a test
        # process on the host, which is on no overlay).
        self.address: Callable[[dict], str | None] = lambda task: task_address(task, stack.network)

    def open(self) -> None:
        """The service as this orchestrator's image and stack make it, then the reader (blocking)."""
        if not self.stack.app_image:
            log.warning("swarm: no image for the node agent (LLAMADOCK_APP_IMAGE; inside the stack, the "
                        "orchestrator's own): pools are the nodes' memory budgets, and no node's files are known")
            return
        try:
            self.service_id = ensure_agent(self.client, agent_service_kwargs(self.stack, self.stack.app_image,
                                                                             self.port))
        except docker.errors.APIError as exc:
            log.warning("swarm: cannot make the node agent's service (%s): no per-node facts", exc)
            return
        if self.service_id is not None:
            self.reader = NodeFactsReader(self.targets, self.on_change)
            self.reader.start()

    def close(self) -> None:
        if self.reader is not None:
            self.reader.stop()

    def targets(self) -> dict[str, str]:
        """Node id -> its agent's /facts, for each running (or starting: not healthy yet) agent task."""
        tasks = self.client.api.tasks(filters={"service": self.service_id, "desired-state": "running"})
        found = {}
        for task in tasks:
            if (task.get("Status") or {}).get("State") in ("starting", "running") and task.get("NodeID"):
                if address := self.address(task):
                    found[task["NodeID"]] = f"http://{address}:{self.port}/facts"
        return found

    def fresh(self) -> dict[str, NodeFacts]:
        return self.reader.fresh() if self.reader is not None else {}

    def ages(self) -> dict[str, float]:
        return self.reader.ages() if self.reader is not None else {}
