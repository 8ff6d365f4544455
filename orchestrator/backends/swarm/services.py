"""Spec + placement -> the Docker SDK arguments for that model's Swarm service.

Pure: ``service_kwargs`` returns the keywords of ``client.services.create`` (and of
``Service.update``, which takes the same), so every shape is unit-tested without a swarm. The
labels are the engine backend's (backends/docker/containers.py), so a restarted orchestrator
adopts the services that run, and the hash is taken the same way: before the placement.

What Swarm cannot do, and what stands in for it:
- no device requests in a service (moby/moby#40133): a GPU is chosen with
  ``NVIDIA_VISIBLE_DEVICES`` on a node whose default runtime is ``nvidia``, and the node by a
  placement constraint; several models then share one GPU, which generic resources cannot do;
- no routable virtual IP where the kernel has no IPVS: ``endpoint_mode=dnsrr``, so the service's
  name resolves to its task's address on the overlay network.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from docker.types import EndpointSpec, Healthcheck, Mount, RestartPolicy, ServiceMode, UpdateConfig

from contract.placement import Placement
from contract.pools import LOCAL_NODE
from contract.spec import ModelSpec

from ...launch import describe_launch
from ..docker.containers import (CACHE_MOUNT, LABEL_MODEL, MODELS_MOUNT, NS, SERVER_PORT, StackFacts, container_name,
                                 model_labels)

# On the task's container, so `docker ps` on any node tells which model a container serves. Not the
# project label: the engine backend (and `make down`) would take these containers for its own.
LABEL_SERVICE_PROJECT = "io.llamadock.swarm-project"

service_name = container_name  # `<project>-model-<name>`: also its DNS name on the overlay


@dataclass(frozen=True)
class SwarmFacts:
    """What the swarm is, as the service arguments need it."""

    gpu: bool  # models get a GPU (NVIDIA_VISIBLE_DEVICES), on nodes whose default runtime is nvidia
    local_hostname: str  # the manager's node, which the contract calls LOCAL_NODE


def node_hostname(placement: Placement, facts: SwarmFacts) -> str:
    return facts.local_hostname if placement.node == LOCAL_NODE else placement.node


def server_command(spec: ModelSpec, gpu: bool, placement: Placement | None = None) -> list[str]:
    """llama-server's arguments (the image's entrypoint is llama-server)."""
    launch = describe_launch(spec, gpu=gpu, placement=placement)
    return ["--host", "0.0.0.0", "--port", str(SERVER_PORT), *launch.argv(models_dir=MODELS_MOUNT)]


def visible_devices(spec: ModelSpec, gpu: bool, placement: Placement | None) -> str:
    """``NVIDIA_VISIBLE_DEVICES``: the placed GPUs, else the spec's; ``void`` without a GPU, because a
    CUDA image says ``all`` itself and a node's nvidia default runtime would hand it every GPU."""
    if not gpu:
        return "void"
    if placement is not None:
        return ",".join(str(i) for i in placement.gpus)
    return "all" if spec.gpus == "all" else ",".join(str(i) for i in spec.gpus)


def service_kwargs(spec: ModelSpec, facts: SwarmFacts, stack: StackFacts, placement: Placement | None = None,
                   *, stop_grace_s: float = 10.0) -> dict:
    """``placement``: the node and GPUs the scheduler chose (None: wherever Swarm puts it)."""
    image = spec.image or (stack.gpu_image if facts.gpu else stack.cpu_image)
    env = {"LLAMA_CACHE": CACHE_MOUNT, "HOME": CACHE_MOUNT,
           "NVIDIA_VISIBLE_DEVICES": visible_devices(spec, facts.gpu, None)}
    kwargs = {
        "image": image,
        # `args`, not `command`: a service's command replaces the image's entrypoint (llama-server).
        "args": server_command(spec, facts.gpu),
        "env": env,
        # The same host path on every node (or a shared volume mounted there, such as NFS).
        "mounts": [Mount(MODELS_MOUNT, stack.models_dir, type="bind", read_only=True),
                   Mount(CACHE_MOUNT, stack.cache_dir, type="bind", read_only=False)],
        "networks": [stack.network],
        # The spec's own node (it changes the service, so the hash); a placement's replaces it below.
        "constraints": [f"node.hostname=={node_hostname(Placement(node=spec.node, gpus=()), facts)}"] if spec.node else [],
        "endpoint_spec": EndpointSpec(mode="dnsrr"),
        "mode": ServiceMode("replicated", replicas=1),
        # Swarm marks a task running only once this passes, and only then adds its name to DNS
        # (the orchestrator's own probe, by the task's address, sees readiness sooner).
        "healthcheck": Healthcheck(
            test=["CMD", "curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{SERVER_PORT}/health"],
            interval=5 * NS, timeout=3 * NS, retries=3,
            start_period=600 * NS),  # loading (or downloading) a big model takes a while
        "restart_policy": RestartPolicy(condition="on-failure", delay=2 * NS, max_attempts=3),
        # One task per model, ever: the old one stops (its memory freed) before the new one starts.
        "update_config": UpdateConfig(parallelism=1, order="stop-first", failure_action="continue"),
        "log_driver": "json-file",
        "log_driver_options": {"max-size": stack.log_max_size, "max-file": str(stack.log_max_files)},
        "stop_signal": "SIGTERM",
        "stop_grace_period": int(stop_grace_s * NS),
    }
    if stack.user:
        kwargs["user"] = stack.user
    digest = hashlib.sha256(json.dumps(kwargs, sort_keys=True).encode()).hexdigest()[:16]
    if placement is not None:
        kwargs["constraints"] = [f"node.hostname=={node_hostname(placement, facts)}"]
        if facts.gpu and placement.gpus:  # (no GPUs: placed by the node's memory budget, on its CPU)
            env["NVIDIA_VISIBLE_DEVICES"] = visible_devices(spec, True, placement)
            kwargs["args"] = server_command(spec, True, placement)
            if len(placement.gpus) > 1:
                env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the split is in NVML's (PCI) order
    kwargs["env"] = [f"{key}={value}" for key, value in sorted(env.items())]
    kwargs["name"] = service_name(stack.project, spec.name)
    kwargs["labels"] = model_labels(stack.project, spec, digest, placement)
    kwargs["container_labels"] = {LABEL_SERVICE_PROJECT: stack.project, LABEL_MODEL: spec.name}
    return kwargs

