"""Docker Swarm as a runtime backend: one replicated service per model, on the node the scheduler
chose, reached over an attachable overlay network. ``swarm_runtime`` is its registration
(orchestrator/backends/__init__.py, ``LLAMADOCK_BACKEND=swarm``)."""

from __future__ import annotations

import logging

import docker
import docker.errors

from contract.listing import HostInfo

from ...settings import OrchestratorSettings
from ..docker.discovery import own_container_attrs, stack_facts
from ..docker.host import detect_host
from .runtime import SwarmRuntime
from .services import SwarmFacts

log = logging.getLogger("llamadock.orchestrator")


def swarm_runtime(settings: OrchestratorSettings, client: docker.DockerClient | None = None) -> SwarmRuntime:
    """The manager from the environment (DOCKER_HOST, the socket): it must be a swarm manager, and
    the overlay network must exist (`make swarm-init` makes both)."""
    client = client or docker.from_env()
    info = client.info()
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
        raise RuntimeError("LLAMADOCK_BACKEND=swarm needs this Docker engine to be a swarm manager: run "
                           "`make swarm-init` first (or set LLAMADOCK_BACKEND=engine).")
    check_network(client, settings.swarm_network)
    host = detect_host(info, settings.gpu)
    warnings = list(host.warnings)
    if host.gpu and info.get("DefaultRuntime") != "nvidia":
        warnings.append("This node's default runtime is not nvidia, so Swarm services get no GPU here: "
                        "run `make swarm-doctor` for what to change.")
    for warning in warnings:
        log.warning("%s", warning)
    stack = stack_facts(settings.model_copy(update={"network": settings.swarm_network}), own_container_attrs(client))
    local = client.api.inspect_node(swarm["NodeID"])
    facts = SwarmFacts(gpu=host.gpu, local_hostname=(local.get("Description") or {}).get("Hostname", ""))
    log.info("swarm: manager %s, project %s, network %s, models in %s (the same path on every node)",
             facts.local_hostname, stack.project, stack.network, stack.models_dir)
    runtime = SwarmRuntime(client, settings, stack, facts, swarm["NodeID"],
                           HostInfo(kind=f"swarm-{host.kind}", warnings=warnings))
    runtime.read_nodes()
    return runtime


def check_network(client: docker.DockerClient, name: str) -> None:
    """The overlay model services join must exist, span the swarm and take the gateway's containers."""
    try:
        attrs = client.networks.get(name).attrs
    except docker.errors.NotFound:
        raise RuntimeError(f"No network {name!r}: run `make swarm-init`, or create it with "
                           f"`docker network create --driver overlay --attachable {name}`.") from None
    if attrs.get("Driver") != "overlay" or not attrs.get("Attachable"):
        raise RuntimeError(f"The network {name!r} is not an attachable overlay network (driver "
                           f"{attrs.get('Driver')!r}, attachable {bool(attrs.get('Attachable'))}); "
                           "LLAMADOCK_SWARM_NETWORK names the one to use.")
