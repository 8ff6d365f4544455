"""A real single-node Docker Swarm for a test module, made with `make swarm-init`'s script.

The host engine is put in a swarm only when it is in none, and leaves it again at the end (its
node label restored when it was in one already); the overlay network is the caller's own and is
removed at the end, once the tasks that used it have let go. A worker of another swarm is skipped:
the swarm backend runs on a manager."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .stack import REPO
from .waiting import wait_until


def sh(*args: str, check: bool = True, env: dict | None = None) -> str:
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr or out.stdout}")
    return out.stdout.strip()


def networks() -> set[str]:
    return set(sh("docker", "network", "ls", "--format", "{{.Name}}").split())


def remove_services(project_prefix: str) -> None:
    """Every service whose project label starts with ``project_prefix`` (what a failed test left)."""
    for service in sh("docker", "service", "ls", "-q", "--filter", "label=io.llamadock.project").split():
        if sh("docker", "service", "inspect", service, "--format",
              '{{index .Spec.Labels "io.llamadock.project"}}', check=False).startswith(project_prefix):
            sh("docker", "service", "rm", service, check=False)


@contextmanager
def single_node_swarm(network: str, models: Path, memory_mb: int, project_prefix: str) -> Iterator[None]:
    """This engine as a swarm manager with the attachable overlay ``network`` (scripts/swarm-init.sh),
    undone at the end; services of projects starting with ``project_prefix`` are removed first."""
    import pytest

    was, manager = sh("docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}").split()
    if was == "active" and manager != "true":
        pytest.skip("this engine is a worker of another swarm: the swarm backend runs on a manager")
    networks_before = networks()
    labels_before = None
    if was == "active":
        labels_before = json.loads(sh("docker", "node", "inspect", "self", "--format", "{{json .Spec.Labels}}"))
    started = time.monotonic()
    sh("bash", str(REPO / "scripts" / "swarm-init.sh"), env=os.environ | {
        "LLAMADOCK_SWARM_ADVERTISE_ADDR": "127.0.0.1",
        "LLAMADOCK_SWARM_NETWORK": network, "LLAMADOCK_NODE_MEMORY_MB": str(memory_mb),
        "LLAMADOCK_MODELS_DIR": str(models)})
    print(f"swarm-init: {time.monotonic() - started:.1f} s", file=sys.stderr)
    try:
        yield
    finally:
        remove_services(project_prefix)
        # The network goes once the removed tasks' containers have let go of it.
        wait_until(lambda: subprocess.run(["docker", "network", "rm", network], capture_output=True).returncode == 0
                   or network not in networks(), 60, f"the removal of network {network}")
        if was == "inactive":
            sh("docker", "swarm", "leave", "--force")
            if "docker_gwbridge" not in networks_before:
                wait_until(lambda: subprocess.run(["docker", "network", "rm", "docker_gwbridge"],
                                                  capture_output=True).returncode == 0, 30, "docker_gwbridge's removal")
        else:
            sh("docker", "node", "update", "--label-rm", "llamadock.memory_mb", "self", check=False)
            if labels_before and "llamadock.memory_mb" in labels_before:
                sh("docker", "node", "update", "--label-add",
                   f"llamadock.memory_mb={labels_before['llamadock.memory_mb']}", "self")
        assert networks() == networks_before, "the swarm test left networks behind"
