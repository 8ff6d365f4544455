"""Where the stack is, as the Docker daemon sees it.

Model containers are created by the daemon, so their bind mounts need host paths
and they must join the stack's network. Inside the stack the orchestrator reads
both from its own container (its compose project label, its network, the host
source of its /models mount), so nothing has to be configured twice. Settings
override each fact, which is how tests run the orchestrator outside a container.
"""

from __future__ import annotations

import os
import socket

import docker
import docker.errors

from .containers import StackFacts
from ...settings import OrchestratorSettings

MODELS_MOUNT_IN_ORCHESTRATOR = "/models"
KV_MOUNT_IN_ORCHESTRATOR = "/kv"


def own_container_attrs(client: docker.DockerClient) -> dict | None:
    """``docker inspect`` of the container this process runs in, or None outside one."""
    try:
        return client.containers.get(socket.gethostname()).attrs
    except (docker.errors.NotFound, docker.errors.APIError):
        return None


def stack_facts(settings: OrchestratorSettings, own: dict | None) -> StackFacts:
    labels = ((own or {}).get("Config") or {}).get("Labels") or {}
    networks = list((((own or {}).get("NetworkSettings") or {}).get("Networks") or {}))
    mounts = {m.get("Destination"): m.get("Source") for m in (own or {}).get("Mounts") or []}
    project = settings.project or labels.get("com.docker.compose.project")
    network = settings.network or (networks[0] if len(networks) == 1 else None)
    models = settings.models_host_dir or mounts.get(MODELS_MOUNT_IN_ORCHESTRATOR)
    missing = [what for what, value in (("LLAMADOCK_PROJECT", project), ("LLAMADOCK_NETWORK", network),
                                        ("LLAMADOCK_MODELS_HOST_DIR", models)) if not value]
    if missing:
        raise RuntimeError("Cannot tell where the stack is: set " + ", ".join(missing)
                           + " (inside the compose stack these are read from the orchestrator's own container).")
    # The KV cache root: set, or the host source of the orchestrator's own /kv mount, or models/.cache/kv.
    kv = settings.kv_cache_host_dir or mounts.get(KV_MOUNT_IN_ORCHESTRATOR) or os.path.join(models, ".cache", "kv")
    return StackFacts(
        project=project, network=network, models_dir=models, cache_dir=os.path.join(models, ".cache"), kv_dir=kv,
        cpu_image=settings.llama_image_cpu, gpu_image=settings.llama_image_gpu, user=settings.model_user,
        app_image=settings.app_image or ((own or {}).get("Config") or {}).get("Image") or None,
    )
