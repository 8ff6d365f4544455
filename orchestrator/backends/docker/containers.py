"""Spec + host facts -> the Docker SDK arguments for that model's llama-server container.

Pure: ``create_kwargs`` returns plain data (``client.containers.create(**kwargs)``),
so every host kind is unit-tested without a daemon. Labels carry everything needed
to rebuild the orchestrator's view after a restart: project, model, spec and its hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from contract.placement import Placement
from contract.spec import ModelSpec

from .host import HostFacts
from ...launch import describe_launch

LABEL_PROJECT = "io.llamadock.project"
LABEL_MODEL = "io.llamadock.model"
LABEL_HASH = "io.llamadock.spec-hash"
LABEL_SPEC = "io.llamadock.spec"
LABEL_PLACEMENT = "io.llamadock.placement"

SERVER_PORT = 8080
MODELS_MOUNT = "/models"  # models/ inside a model container (read-only)
CACHE_MOUNT = "/cache"  # models/.cache inside it: where -hf downloads land (read-write)
KV_MOUNT = "/kv"  # the model's own KV cache directory inside it: slots saved before a stop (read-write)
NS = 1_000_000_000  # Docker wants durations in nanoseconds


@dataclass(frozen=True)
class StackFacts:
    """Where the stack lives, as the Docker daemon sees it (host paths, network name)."""

    project: str
    network: str
    models_dir: str  # host path of models/
    cache_dir: str  # host path of models/.cache
    cpu_image: str
    gpu_image: str
    user: str | None = None  # "uid:gid" the servers run as (so downloads belong to the user)
    kv_dir: str | None = None  # host path of the KV cache root: one directory per model (None: no slot files)
    app_image: str | None = None  # the image the orchestrator runs (the swarm's node agent runs it too)
    log_max_size: str = "10m"
    log_max_files: int = 3


def container_name(project: str, model: str) -> str:
    return f"{project}-model-{model}"


def candidate_name(project: str, model: str) -> str:
    """A second container of a model, beside its own (an image upgrade's trial): another prefix, so
    no model's name can make it (model names may hold `-`)."""
    return f"{project}-candidate-{model}"


def kv_host_dir(stack: StackFacts, model: str) -> str | None:
    """The host directory a model's slots are saved in (the gateway sees it under its own mount)."""
    return None if stack.kv_dir is None else f"{stack.kv_dir}/{model}"


def server_command(spec: ModelSpec, host: HostFacts, placement: Placement | None = None,
                   kv: bool = False) -> list[str]:
    """llama-server's arguments (the image's entrypoint is llama-server); ``kv``: slots can be saved."""
    launch = describe_launch(spec, gpu=host.gpu, placement=placement)
    return ["--host", "0.0.0.0", "--port", str(SERVER_PORT),
            *launch.argv(models_dir=MODELS_MOUNT, kv_dir=KV_MOUNT if kv else None)]


def _device_requests(spec: ModelSpec, host: HostFacts) -> list[dict]:
    if not host.gpu:
        return []
    ids = None if spec.gpus == "all" else [str(i) for i in spec.gpus]
    if host.gpu_driver == "cdi":
        names = ["nvidia.com/gpu=all"] if ids is None else [f"nvidia.com/gpu={i}" for i in ids]
        return [{"Driver": "cdi", "DeviceIDs": names}]
    request = {"Driver": "nvidia", "Capabilities": [["gpu", "compute", "utility"]]}
    if ids is None:
        request["Count"] = -1
    else:
        request["DeviceIDs"] = ids
    return [request]


def _place(kwargs: dict, placement: Placement, host: HostFacts) -> None:
    """Exactly those GPUs (the layer split across several is in the launch's command line)."""
    ids = [str(i) for i in placement.gpus]
    if host.gpu_driver == "cdi":
        kwargs["device_requests"] = [{"Driver": "cdi", "DeviceIDs": [f"nvidia.com/gpu={i}" for i in ids]}]
    else:
        kwargs["device_requests"] = [{"Driver": "nvidia", "DeviceIDs": ids,
                                      "Capabilities": [["gpu", "compute", "utility"]]}]
    if len(placement.gpus) > 1:
        # CUDA numbers devices fastest first by default; the split is given in NVML's (PCI) order.
        kwargs["environment"]["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"


def create_kwargs(spec: ModelSpec, host: HostFacts, stack: StackFacts, placement: Placement | None = None) -> dict:
    """``placement``: the GPUs the scheduler chose (None: the spec's ``gpus``; ignored without a GPU)."""
    image = spec.image or (stack.gpu_image if host.gpu else stack.cpu_image)
    environment = {"LLAMA_CACHE": CACHE_MOUNT, "HOME": CACHE_MOUNT}
    mounts = [
        {"Type": "bind", "Source": stack.models_dir, "Target": MODELS_MOUNT, "ReadOnly": True},
        {"Type": "bind", "Source": stack.cache_dir, "Target": CACHE_MOUNT, "ReadOnly": False},
    ]
    kv_dir = kv_host_dir(stack, spec.name)
    if kv_dir is not None:
        # Its own directory only: a server can neither read nor overwrite another model's slots.
        mounts.append({"Type": "bind", "Source": kv_dir, "Target": KV_MOUNT, "ReadOnly": False})
    devices: list[str] = []
    if host.gpu and host.wsl2 and not host.docker_desktop:
        # A Docker engine inside a WSL2 distro: the driver's libraries are in
        # /usr/lib/wsl/lib and the GPU is the paravirtual /dev/dxg device.
        environment["LD_LIBRARY_PATH"] = "/usr/lib/wsl/lib"
        mounts.append({"Type": "bind", "Source": "/usr/lib/wsl", "Target": "/usr/lib/wsl", "ReadOnly": True})
        devices.append("/dev/dxg:/dev/dxg:rwm")
    kwargs = {
        "image": image,
        "command": server_command(spec, host, kv=kv_dir is not None),
        "environment": environment,
        "mounts": mounts,
        "devices": devices,
        "device_requests": _device_requests(spec, host),
        "network": stack.network,
        "healthcheck": {
            # The official llama.cpp server images ship curl for exactly this.
            "test": ["CMD", "curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{SERVER_PORT}/health"],
            "interval": 5 * NS, "timeout": 3 * NS, "retries": 3,
            "start_period": 600 * NS,  # loading (or downloading) a big model takes a while
        },
        "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 3},
        "log_config": {"type": "json-file",
                       "config": {"max-size": stack.log_max_size, "max-file": str(stack.log_max_files)}},
        "stop_signal": "SIGTERM",
        "privileged": False,
        "security_opt": ["no-new-privileges"],
        "detach": True,
    }
    if stack.user:
        kwargs["user"] = stack.user
    # The hash is taken before placement: reconcile (which knows no placement) then leaves a placed
    # container alone; a start that asks for another placement compares the placement label too.
    digest = hashlib.sha256(json.dumps(kwargs, sort_keys=True).encode()).hexdigest()[:16]
    if placement is not None and not placement.gpus:
        placement = None  # this box's memory, no GPU: what an unplaced model gets
    if placement is not None and host.gpu:
        _place(kwargs, placement, host)
        kwargs["command"] = server_command(spec, host, placement, kv=kv_dir is not None)
    kwargs["name"] = container_name(stack.project, spec.name)
    # The hash covers the container as created (spec, image, host kind, mounts), so reconcile
    # recreates a model whenever anything that shapes it changed.
    kwargs["labels"] = model_labels(stack.project, spec, digest, placement if host.gpu else None)
    return kwargs


def model_labels(project: str, spec: ModelSpec, digest: str, placement: Placement | None) -> dict[str, str]:
    """What a model's instance is known by, in every backend (a container, a Swarm service): so a
    restarted orchestrator adopts what runs, and tells a current instance from an outdated one."""
    return {
        LABEL_PROJECT: project,
        LABEL_MODEL: spec.name,
        LABEL_HASH: digest,
        LABEL_SPEC: json.dumps(spec.model_dump(mode="json"), sort_keys=True),
        LABEL_PLACEMENT: placement.label() if placement is not None else "",
    }


def spec_hash(kwargs: dict) -> str:
    return kwargs["labels"][LABEL_HASH]
