#!/usr/bin/env python3
"""Join this box to a llamadock swarm as a node (`make swarm-join TOKEN=... MANAGER=host[:port]`).

scripts/swarm-join.sh runs `make swarm-doctor` first; this then checks the token and the
manager's address, runs `docker swarm join`, and gives the node its memory budget for models
(the label llamadock.memory_mb, from LLAMADOCK_NODE_MEMORY_MB or 3/4 of the memory Docker
reports). Only a manager can label a node: joined as a worker, it prints the command to run on
the manager instead. Standard library only, like the doctor. ``plan`` is pure
(tests/unit/test_swarm_join.py); ``main`` runs what it says.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass

SWARM_PORT = 2377  # the managers' cluster-management port (docker swarm init's default)
# What `docker swarm join-token` prints: SWMTKN-1-<cluster CA digest>-<secret>, both base 36.
TOKEN = re.compile(r"SWMTKN-1-[0-9a-z]{20,}-[0-9a-z]{20,}")
HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
LABEL = "llamadock.memory_mb"


class Refused(ValueError):
    """What is wrong with the input or this engine's state, said so that the user can fix it."""


@dataclass(frozen=True)
class Plan:
    join: tuple[str, ...]  # the `docker swarm join` command
    memory_mb: int  # this node's budget for models (its label)

    def label(self, node: str) -> tuple[str, ...]:
        """The command that gives ``node`` its budget (on a manager)."""
        return ("docker", "node", "update", "--label-add", f"{LABEL}={self.memory_mb}", node)


def manager_address(manager: str) -> str:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> ``host:port`` (the default port added)."""
    manager = manager.strip()
    if not manager:
        raise Refused("MANAGER is empty: give the manager's address, e.g. MANAGER=192.168.1.10 "
                      "(`make swarm-init` on the manager prints it)")
    if "/" in manager:
        raise Refused(f"MANAGER={manager!r} is not a host name or address: no scheme or path (host or host:port)")
    if manager.startswith("["):
        host, bracket, rest = manager[1:].partition("]")
        if not host or not bracket or (rest and not rest.startswith(":")):
            raise Refused(f"MANAGER={manager!r} is not an address: an IPv6 one is written [addr] or [addr]:port")
        port = rest[1:] if rest else str(SWARM_PORT)
        host = f"[{host}]"
    else:
        host, _, port = manager.partition(":")
        port = port or str(SWARM_PORT)
        if not HOST.fullmatch(host):
            raise Refused(f"MANAGER={manager!r} is not a host name or address (host or host:port)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise Refused(f"MANAGER={manager!r}: the port must be a number from 1 to 65535 (the swarm's is {SWARM_PORT})")
    return f"{host}:{port}"


def memory_budget(mem_total_bytes: int, setting: str | None) -> int:
    """LLAMADOCK_NODE_MEMORY_MB when set (a whole number of MiB), else 3/4 of the memory Docker reports."""
    if setting:
        if not setting.isdigit() or int(setting) <= 0:
            raise Refused(f"LLAMADOCK_NODE_MEMORY_MB must be a whole number of MiB, not {setting!r}")
        return int(setting)
    return mem_total_bytes // 2**20 * 3 // 4


def plan(token: str, manager: str, state: str, mem_total_bytes: int, memory_setting: str | None = None,
         advertise_addr: str | None = None) -> Plan:
    """What `make swarm-join` does on an engine in swarm ``state`` (docker info's LocalNodeState)."""
    token = token.strip()
    if not token:
        raise Refused("TOKEN is empty: on the manager, `docker swarm join-token -q worker` prints it")
    if not TOKEN.fullmatch(token):
        raise Refused("TOKEN is not a swarm join token (SWMTKN-1-...): on the manager, "
                      "`docker swarm join-token -q worker` prints one")
    address = manager_address(manager)
    if state == "active":
        raise Refused("this engine is in a swarm already (`docker node ls` on its manager lists it): "
                      "`docker swarm leave` first to join another")
    if state != "inactive":
        raise Refused(f"this engine's swarm state is {state!r}: wait for it to settle, "
                      "or `docker swarm leave --force`")
    memory = memory_budget(mem_total_bytes, memory_setting)
    join = ["docker", "swarm", "join", "--token", token]
    if advertise_addr:
        join += ["--advertise-addr", advertise_addr]
    return Plan(join=tuple(join + [address]), memory_mb=memory)


def _docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def main() -> int:
    info = _docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.MemTotal}}")
    if info.returncode != 0:
        print(f"swarm-join: Docker does not answer here: {info.stderr.strip()}", file=sys.stderr)
        return 1
    state, mem_total = info.stdout.split()
    try:
        steps = plan(os.environ.get("TOKEN", ""), os.environ.get("MANAGER", ""), state, int(mem_total),
                     os.environ.get("LLAMADOCK_NODE_MEMORY_MB"), os.environ.get("LLAMADOCK_SWARM_ADVERTISE_ADDR"))
    except Refused as exc:
        print(f"swarm-join: {exc}", file=sys.stderr)
        return 2
    joined = subprocess.run(steps.join, capture_output=True, text=True, timeout=120)
    if joined.returncode != 0:
        print(f"swarm-join: docker swarm join failed: {(joined.stderr or joined.stdout).strip()}\n"
              "  (is the manager's port 2377 reachable from here? a box with several addresses needs "
              "LLAMADOCK_SWARM_ADVERTISE_ADDR=<address>)", file=sys.stderr)
        return 1
    print(f"swarm-join: {joined.stdout.strip()}", file=sys.stderr)
    node = _docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()
    labelled = _docker(*steps.label(node)[1:])
    if labelled.returncode == 0:
        print(f"swarm-join: {LABEL}={steps.memory_mb} (this node is a manager)", file=sys.stderr)
    else:  # a worker: only a manager can label it
        name = _docker("info", "--format", "{{.Name}}").stdout.strip() or node
        print("swarm-join: now, on the manager, give this node its memory budget for models:\n  "
              + " ".join(steps.label(name)), file=sys.stderr)
    print("swarm-join: this node needs the llama-server image and the models directory at the manager's "
          "path (README, Several boxes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
