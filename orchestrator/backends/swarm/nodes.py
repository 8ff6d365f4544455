"""A swarm's nodes as what llamadock can place on: pure functions over ``docker node inspect`` data.

Each node offers its memory budget for now, the node label ``llamadock.memory_mb`` (``docker node
update --label-add llamadock.memory_mb=12000 NODE``; `make swarm-init` sets it on the first box).
A node's GPUs, read by NVML on that node, come with the per-node agent in a later step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from contract.pools import LOCAL_NODE, Pool, PoolId

from ..runtime import LIVE, Instance

MEMORY_LABEL = "llamadock.memory_mb"
MIB = 1024 * 1024


@dataclass(frozen=True)
class SwarmNode:
    id: str
    hostname: str
    name: str  # as the contract names it: LOCAL_NODE for the manager's own node, else its hostname
    ready: bool  # up and active: Swarm places new tasks there
    memory_bytes: int | None  # its budget for models (None: not labelled)
    problem: str | None = None  # why a label could not be read
    state: str = "ready"  # Swarm's word for it: ready, down (its engine stopped, or cut off), unknown, disconnected


def node_from_attrs(attrs: dict, local_id: str) -> SwarmNode:
    description = attrs.get("Description") or {}
    spec = attrs.get("Spec") or {}
    hostname = description.get("Hostname", "") or attrs.get("ID", "")
    labels = spec.get("Labels") or {}
    memory, problem = None, None
    raw = labels.get(MEMORY_LABEL)
    if raw is not None:
        try:
            memory = int(raw) * MIB
            if memory <= 0:
                raise ValueError
        except ValueError:
            memory, problem = None, f"node {hostname}: label {MEMORY_LABEL}={raw!r} is not a positive number of MiB"
    ready = (attrs.get("Status") or {}).get("State") == "ready" and spec.get("Availability", "active") == "active"
    return SwarmNode(id=attrs.get("ID", ""), hostname=hostname,
                     name=LOCAL_NODE if attrs.get("ID") == local_id else hostname,
                     ready=ready, memory_bytes=memory, problem=problem,
                     state=(attrs.get("Status") or {}).get("State", "unknown"))


UNREACHABLE = ("down", "unknown", "disconnected")  # a drained node is reachable: its tasks run on


def unreachable(nodes: Sequence[SwarmNode]) -> dict[str, str]:
    """The nodes Swarm has lost touch with, by name, with Swarm's state for each."""
    return {n.name: n.state for n in nodes if n.state in UNREACHABLE}


def node_pools(nodes: Sequence[SwarmNode], instances: Sequence[Instance]) -> list[Pool]:
    """One memory budget per node that takes tasks, with the models running there."""
    live = [i for i in instances if i.state in LIVE]
    return [Pool(id=PoolId(node=node.name), total_bytes=node.memory_bytes,
                 models=sorted(i.model for i in live if i.node == node.name))
            for node in sorted(nodes, key=lambda n: (n.name != LOCAL_NODE, n.name)) if node.ready]


def known_names(nodes: Sequence[SwarmNode]) -> list[str]:
    """What a placement may name: each node by hostname; the manager's also as LOCAL_NODE."""
    names = {n.hostname for n in nodes} | {n.name for n in nodes}
    return sorted(names)
