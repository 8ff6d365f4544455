"""The Docker engine on one box, as a runtime backend: one container per model on the stack's
network. ``docker_runtime`` is its registration (orchestrator/backends/__init__.py)."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os

import docker

from ...settings import OrchestratorSettings
from .discovery import own_container_attrs, stack_facts
from .host import detect_host
from .runtime import DockerRuntime

log = logging.getLogger("llamadock.orchestrator")


def docker_runtime(settings: OrchestratorSettings, client: docker.DockerClient | None = None) -> DockerRuntime:
    """The daemon from the environment (DOCKER_HOST, the socket), the host it runs on, and where
    the stack is (read from the orchestrator's own container, or the settings)."""
    client = client or docker.from_env()
    host = detect_host(client.info(), settings.gpu)
    for warning in host.warnings:
        log.warning("%s", warning)
    stack = stack_facts(settings, own_container_attrs(client))
    try:
        settings.kv_root.mkdir(parents=True, exist_ok=True)
        if not os.access(settings.kv_root, os.W_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as exc:
        # An older compose file (no /kv mount) or a read-only disk: models run as before, without
        # slot files, rather than fail to start.
        log.warning("the KV cache root %s cannot be made (%s): conversations are not kept across stops",
                    settings.kv_root, exc.strerror or exc)
        stack = dataclasses.replace(stack, kv_dir=None)
    log.info("host: %s; project %s, network %s, models in %s", host.kind, stack.project, stack.network,
             stack.models_dir)
    return DockerRuntime(client, settings, stack, host)
