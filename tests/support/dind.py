"""A real three-node Docker Swarm on one machine: this engine as the manager, two Docker-in-Docker
workers beside it.

The manager is the machine's own engine, so `LLAMADOCK_BACKEND=swarm make up` runs the stack on it
unchanged; the workers (``llamadock-test-node2`` and ``-node3``, hostnames ``node2`` / ``node3``)
are containers running their own dockerd on a test bridge network of their own. The manager
advertises its address on that bridge (the bridge's gateway), which the workers reach for the
control plane (TCP 2377), gossip (7946) and the overlay's VXLAN (UDP 4789) alike.

    with multi_node_swarm(models=stack.models, overlay=net, images=[llama_image, app_image],
                          memory_mb={"manager": 150, "node2": 150, "node3": 150}) as bed:
        bed.stop_node("node3"); bed.wait_node("node3", "down", 30)

What it needs from the machine (shared/ENVIRONMENT.md): no ``--privileged`` (the machine lacks
CAP_SYS_RESOURCE), so a node gets every capability but that one, and no IPVS, so services use
``endpoint_mode=dnsrr``. The swarm is made only if the engine is in none (a worker of another
swarm skips the module; a manager has the workers join it), and everything is undone at the end,
checked: no node container, worker node, network or label of ours is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .stack import REPO
from .swarm import networks, remove_services, sh
from .waiting import wait_until

WORKERS = ("node2", "node3")
CONTAINER_PREFIX = "llamadock-test-"
BED_LABEL = "io.llamadock.test-bed"  # on the worker nodes and the bed's containers and network
MEMORY_LABEL = "llamadock.memory_mb"
MANAGER = "manager"  # how callers name the manager's node in memory_mb
HEARTBEAT_S = 2  # Swarm's dispatcher heartbeat for the bed: a stopped node is marked down in seconds
NODE_DOCKERFILE = """\
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
    docker.io iproute2 iptables ca-certificates curl \\
 && rm -rf /var/lib/apt/lists/*
VOLUME /var/lib/docker
CMD ["dockerd"]
"""
# --privileged minus CAP_SYS_RESOURCE, which this machine's root lacks (ENVIRONMENT.md).
NODE_RUN_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "-v", "/lib/modules:/lib/modules:ro",
]


def log(message: str) -> None:
    print(f"dind: {message}", file=sys.stderr)


def node_image() -> str:
    """The worker image, built from the local debian:bookworm-slim once per Dockerfile (its hash is the tag)."""
    tag = f"llamadock/test-node:{hashlib.sha256(NODE_DOCKERFILE.encode()).hexdigest()[:12]}"
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode != 0:
        began = time.monotonic()
        out = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=NODE_DOCKERFILE, text=True,
                             capture_output=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"building {tag} failed:\n{out.stderr[-3000:]}")
        log(f"built {tag} in {time.monotonic() - began:.1f} s")
    return tag


def container_of(hostname: str) -> str:
    return CONTAINER_PREFIX + hostname


@dataclass
class Bed:
    """The running swarm: the manager's engine plus the worker containers, and what to do to them."""

    network: str  # the test bridge the workers are on
    overlay: str  # the attachable overlay the stack uses
    manager_addr: str
    manager_hostname: str
    timings: dict[str, float] = field(default_factory=dict)

    # ---- the nodes' engines ---------------------------------------------------------------------

    def docker(self, hostname: str, *args: str, check: bool = True) -> str:
        """``docker ARGS`` on that node's engine (the manager's is this machine's)."""
        if hostname in (MANAGER, self.manager_hostname, "local"):
            return sh("docker", *args, check=check)
        return sh("docker", "exec", container_of(hostname), "docker", *args, check=check)

    def node_state(self, hostname: str) -> str:
        """Swarm's view from the manager: ready, down, unknown, disconnected."""
        return sh("docker", "node", "inspect", hostname, "--format", "{{.Status.State}}")

    def wait_node(self, hostname: str, state: str, timeout: float) -> float:
        """Seconds until the manager sees ``hostname`` in ``state``."""
        began = time.monotonic()
        wait_until(lambda: self.node_state(hostname) == state, timeout, f"node {hostname} to be {state}",
                   every=0.1, detail=lambda: sh("docker", "node", "ls"))
        return time.monotonic() - began

    def stop_node(self, hostname: str) -> None:
        """The node's engine stops (and with it the tasks it runs), as when a box is switched off."""
        sh("docker", "stop", "-t", "10", container_of(hostname))

    def start_node(self, hostname: str, timeout: float = 60) -> float:
        """Start it again; seconds until its engine answers (it then rejoins the swarm by itself)."""
        began = time.monotonic()
        sh("docker", "start", container_of(hostname))
        wait_until(lambda: self.docker(hostname, "info", check=False) != "", timeout, f"{hostname}'s engine")
        return time.monotonic() - began

    def cut_network(self, hostname: str) -> None:
        """The node keeps running with its tasks, but nothing reaches it (a pulled cable)."""
        sh("docker", "network", "disconnect", self.network, container_of(hostname))

    def restore_network(self, hostname: str) -> None:
        sh("docker", "network", "connect", self.network, container_of(hostname))

    def heal(self, timeout: float = 90) -> None:
        """Every worker running and on the test network again, and Ready: what a failed test left
        broken does not become the next test's failure."""
        for hostname in WORKERS:
            container = container_of(hostname)
            if sh("docker", "inspect", container, "--format", "{{.State.Running}}") != "true":
                self.start_node(hostname)
            if self.network not in json.loads(sh("docker", "inspect", container, "--format",
                                                 "{{json .NetworkSettings.Networks}}")):
                self.restore_network(hostname)
        for hostname in WORKERS:
            self.wait_node(hostname, "ready", timeout)

    # ---- what runs where ------------------------------------------------------------------------

    def hostnames(self) -> list[str]:
        return [self.manager_hostname, *WORKERS]

    def running_task_containers(self, service: str) -> dict[str, list[str]]:
        """Per node (hostname), the running containers of ``service``'s tasks; a node whose engine
        does not answer counts as running none."""
        found = {}
        for hostname in self.hostnames():
            out = self.docker(hostname, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}",
                              check=False)
            found[hostname] = out.split()
        return found

    def all_containers(self, label: str) -> dict[str, list[str]]:
        """Per node, every container (running or not) carrying ``label`` (key=value)."""
        return {hostname: self.docker(hostname, "ps", "-aq", "--filter", f"label={label}").split()
                for hostname in self.hostnames()}

    def set_memory(self, memory_mb: dict[str, int]) -> None:
        for hostname, mb in memory_mb.items():
            node = self.manager_hostname if hostname == MANAGER else hostname
            sh("docker", "node", "update", "--label-add", f"{MEMORY_LABEL}={mb}", node)

    def load_images(self, images: list[str], hostnames: tuple[str, ...] = WORKERS) -> float:
        """``docker save`` each image once, ``docker load`` it into the nodes in parallel; seconds taken."""
        began = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="llamadock-images-") as tmp:
            archive = Path(tmp) / "images.tar"
            sh("docker", "save", "-o", str(archive), *images)

            def load(hostname: str) -> None:
                with archive.open("rb") as data:
                    out = subprocess.run(["docker", "exec", "-i", container_of(hostname), "docker", "load"],
                                         stdin=data, capture_output=True, text=True, timeout=300)
                if out.returncode != 0:
                    raise RuntimeError(f"docker load on {hostname} failed: {out.stderr}")
            with ThreadPoolExecutor(len(hostnames)) as pool:
                list(pool.map(load, hostnames))
        return time.monotonic() - began


def _engine_swarm() -> tuple[str, bool, str]:
    state, control, addr = sh("docker", "info", "--format",
                              "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeAddr}}x").split(" ")
    return state, control == "true", addr[:-1]


def _heartbeat() -> str:
    """Swarm's dispatcher heartbeat period, as a duration `docker swarm update` takes back ("5s")."""
    return sh("docker", "info", "--format", "{{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}")


def _remove_stale() -> None:
    """What a run that was killed before its teardown left: the node containers and worker nodes."""
    stale = sh("docker", "ps", "-aq", "--filter", f"label={BED_LABEL}").split()
    if stale:
        sh("docker", "rm", "-f", "-v", *stale, check=False)
    if _engine_swarm()[1]:
        for node in sh("docker", "node", "ls", "-q", "--filter", f"node.label={BED_LABEL}").split():
            sh("docker", "node", "rm", "--force", node, check=False)


def _start_worker(hostname: str, image: str, network: str, mounts: list[tuple[Path, Path]]) -> None:
    volumes = [arg for source, target in mounts for arg in ("-v", f"{source}:{target}:rw")]
    sh("docker", "run", "-d", *NODE_RUN_FLAGS, *volumes, "--label", BED_LABEL, "--network", network,
       "--name", container_of(hostname), "--hostname", hostname, image)


def _reachable(hostname: str, addr: str, port: int = 2377) -> bool:
    return subprocess.run(["docker", "exec", container_of(hostname), "timeout", "3", "bash", "-c",
                           f"</dev/tcp/{addr}/{port}"], capture_output=True).returncode == 0


@contextmanager
def multi_node_swarm(*, models: Path, overlay: str, images: list[str], memory_mb: dict[str, int],
                     project_prefix: str = "llamadock-test-",
                     node_models: dict[str, Path] | None = None) -> Iterator[Bed]:
    """Three Ready nodes: this engine (manager) and the workers node2, node3.

    ``models`` is bind-mounted read-write at its own absolute path into each worker (so a
    service's bind mount of it, and of its ``.cache``, resolves there), except on the workers
    ``node_models`` names, which get that other directory at the path instead (a node that lacks
    a file). ``images`` are loaded into each worker. ``memory_mb``: the ``llamadock.memory_mb``
    label per node (``"manager"`` for this engine). ``overlay``: the attachable overlay network
    made for the stack (scripts/swarm-init.sh). Services of projects starting with
    ``project_prefix`` are removed at the end.
    """
    state, manager, addr = _engine_swarm()
    if state == "active" and not manager:
        _cannot("this engine is a worker of another swarm: the bed needs it as a manager")
    if state not in ("inactive", "active"):
        _cannot(f"this engine's swarm state is {state!r}")
    began = time.monotonic()
    _remove_stale()
    networks_before = networks()
    image = node_image()
    network = f"llamadock-test-nodes-{hashlib.sha256(str(models).encode()).hexdigest()[:8]}"
    with ExitStack() as undo:
        sh("docker", "network", "create", "--driver", "bridge", "--label", BED_LABEL, network)
        undo.callback(_remove_network, network)
        gateway = sh("docker", "network", "inspect", network, "--format", "{{(index .IPAM.Config 0).Gateway}}")
        for hostname in WORKERS:
            mounts = [((node_models or {}).get(hostname, models), models)]
            undo.callback(sh, "docker", "rm", "-f", "-v", container_of(hostname), check=False)
            _start_worker(hostname, image, network, mounts)
        for hostname in WORKERS:
            wait_until(lambda: subprocess.run(["docker", "exec", container_of(hostname), "docker", "info"],
                                              capture_output=True).returncode == 0, 60, f"{hostname}'s engine")
        engines_at = time.monotonic()

        if state == "inactive":
            sh("docker", "swarm", "init", "--advertise-addr", gateway)
            undo.callback(_leave_manager, networks_before)
            addr = gateway
        elif not all(_reachable(h, addr) for h in WORKERS):
            _cannot(f"this engine manages a swarm at {addr}, which the bed's nodes cannot reach")
        heartbeat_before = _heartbeat()
        sh("docker", "swarm", "update", "--dispatcher-heartbeat", f"{HEARTBEAT_S}s")
        undo.callback(sh, "docker", "swarm", "update", "--dispatcher-heartbeat", heartbeat_before, check=False)
        manager_hostname = sh("docker", "node", "inspect", "self", "--format", "{{.Description.Hostname}}")
        labels_before = json.loads(sh("docker", "node", "inspect", "self", "--format", "{{json .Spec.Labels}}"))
        undo.callback(_restore_label, labels_before.get(MEMORY_LABEL))

        token = sh("docker", "swarm", "join-token", "-q", "worker")
        for hostname in WORKERS:
            undo.callback(_remove_worker, hostname)
            sh("docker", "exec", container_of(hostname), "docker", "swarm", "join", "--token", token, f"{addr}:2377")
        for hostname in WORKERS:
            wait_until(lambda: sh("docker", "node", "inspect", hostname, "--format", "{{.Status.State}}",
                                  check=False) == "ready", 60, f"{hostname} Ready in the swarm")
            sh("docker", "node", "update", "--label-add", f"{BED_LABEL}=1", hostname)
        joined_at = time.monotonic()

        # The overlay, this node's label and models/.cache, as `make swarm-init` makes them.
        sh("bash", str(REPO / "scripts" / "swarm-init.sh"), env=_env({
            "LLAMADOCK_SWARM_NETWORK": overlay, "LLAMADOCK_MODELS_DIR": str(models),
            "LLAMADOCK_NODE_MEMORY_MB": str(memory_mb.get(MANAGER, 3072))}))
        undo.callback(_remove_overlay, overlay)
        undo.callback(remove_services, project_prefix)  # runs first: the overlay goes once its tasks have
        for other in (node_models or {}).values():
            (other / ".cache").mkdir(parents=True, exist_ok=True)
        bed = Bed(network=network, overlay=overlay, manager_addr=addr, manager_hostname=manager_hostname)
        bed.set_memory(memory_mb)
        bed.timings["load_images_s"] = bed.load_images(images) if images else 0.0
        bed.timings["engines_s"] = engines_at - began
        bed.timings["join_s"] = joined_at - engines_at
        bed.timings["bring_up_s"] = time.monotonic() - began
        log(f"bring-up {bed.timings['bring_up_s']:.1f} s (node engines {bed.timings['engines_s']:.1f} s, "
            f"swarm join {bed.timings['join_s']:.1f} s, image load {bed.timings['load_images_s']:.1f} s "
            f"for {', '.join(images)})")
        try:
            yield bed
        finally:
            log("tearing down")
    left = leftovers(networks_before)
    assert not left, f"the multi-node bed left these behind: {left}"


def _cannot(reason: str) -> None:
    """Skip the module, unless CI says the Docker tests must run (LLAMADOCK_REQUIRE_DOCKER): then fail."""
    import pytest

    if os.environ.get("LLAMADOCK_REQUIRE_DOCKER"):
        raise RuntimeError(f"LLAMADOCK_REQUIRE_DOCKER is set but the multi-node bed cannot run: {reason}")
    pytest.skip(reason)


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


def _remove_worker(hostname: str) -> None:
    """Leave on the worker (its engine may be stopped or cut off: best effort), then forget it on the manager."""
    subprocess.run(["docker", "exec", container_of(hostname), "docker", "swarm", "leave", "--force"],
                   capture_output=True, timeout=60)
    sh("docker", "rm", "-f", "-v", container_of(hostname), check=False)
    sh("docker", "node", "rm", "--force", hostname, check=False)


def _remove_overlay(overlay: str) -> None:
    # The network goes once the removed services' tasks have let go of it.
    wait_until(lambda: subprocess.run(["docker", "network", "rm", overlay], capture_output=True).returncode == 0
               or overlay not in networks(), 60, f"the removal of network {overlay}")


def _restore_label(value: str | None) -> None:
    if _engine_swarm()[0] != "active":
        return
    sh("docker", "node", "update", "--label-rm", MEMORY_LABEL, "self", check=False)
    if value is not None:
        sh("docker", "node", "update", "--label-add", f"{MEMORY_LABEL}={value}", "self")


def _leave_manager(networks_before: set[str]) -> None:
    sh("docker", "swarm", "leave", "--force")
    if "docker_gwbridge" not in networks_before:
        wait_until(lambda: "docker_gwbridge" not in networks() or subprocess.run(
            ["docker", "network", "rm", "docker_gwbridge"], capture_output=True).returncode == 0,
            30, "docker_gwbridge's removal")


def _remove_network(network: str) -> None:
    wait_until(lambda: network not in networks() or subprocess.run(
        ["docker", "network", "rm", network], capture_output=True).returncode == 0, 30, f"the removal of {network}")


def leftovers(networks_before: set[str]) -> list[str]:
    left = [f"container {c}" for c in sh("docker", "ps", "-aq", "--filter", f"label={BED_LABEL}").split()]
    left += [f"network {n}" for n in sorted(networks() - networks_before)]
    if _engine_swarm()[1]:
        left += [f"node {n}" for n in sh("docker", "node", "ls", "--format", "{{.Hostname}}").split()
                 if n in WORKERS]
    return left
