"""A swarm's nodes as what llamadock can place on: pure functions over ``docker node inspect`` data.

A node whose agent (agent/, contract/nodes.py) reports GPUs offers one pool per GPU; any other
node its memory budget, the node label ``llamadock.memory_mb`` (``docker node update --label-add
llamadock.memory_mb=12000 NODE``; `make swarm-init` sets it on the first box). The facts passed in
are the fresh ones only (node_facts.py): a node whose agent went quiet falls back to its budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from contract.nodes import NodeFacts, NodeGpu, NodeView
from contract.pools import LOCAL_NODE, Pool, PoolId
from contract.spec import ModelSpec

from ..pools import placed_gpus
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


def _in_order(nodes: Sequence[SwarmNode]) -> list[SwarmNode]:
    return sorted(nodes, key=lambda n: (n.name != LOCAL_NODE, n.name))


def node_pools(nodes: Sequence[SwarmNode], instances: Sequence[Instance],
               facts: Mapping[str, NodeFacts] | None = None) -> list[Pool]:
    """Per node that takes tasks: its GPUs as its agent reads them (``facts`` by node id), each with
    the models placed there; without GPUs (or no fresh facts), its memory budget with its models."""
    live = [i for i in instances if i.state in LIVE]
    pools = []
    for node in _in_order(nodes):
        if not node.ready:
            continue
        here = [i for i in live if i.node == node.name]
        gpus = (facts or {}).get(node.id).gpus if (facts or {}).get(node.id) else []
        if not gpus:
            pools.append(Pool(id=PoolId(node=node.name), total_bytes=node.memory_bytes,
                              models=sorted(i.model for i in here)))
            continue
        every = tuple(g.index for g in gpus)
        pools += [Pool(id=PoolId(node=node.name, gpu=gpu.index), uuid=gpu.uuid, name=gpu.name,
                       total_bytes=gpu.total_bytes, free_bytes=gpu.free_bytes,
                       models=sorted(i.model for i in here if gpu.index in placed_gpus(i, every)),
                       model_bytes=model_bytes(gpu, here))
                  for gpu in gpus]
    return pools


def model_bytes(gpu: NodeGpu, instances: Sequence[Instance]) -> dict[str, int] | None:
    """What our models' servers use on one GPU, by the container of each process the agent saw
    there; None when NVML listed no processes (WSL2)."""
    if gpu.processes is None:
        return None
    of = {i.container_id: i.model for i in instances if i.container_id}
    used: dict[str, int] = {}
    for process in gpu.processes:
        model = of.get(process.container_id or "")
        if model is not None and process.used_bytes:
            used[model] = used.get(model, 0) + process.used_bytes
    return used


def absent_on(spec: ModelSpec, nodes: Sequence[SwarmNode], facts: Mapping[str, NodeFacts]) -> dict[str, str]:
    """The ready nodes with fresh facts whose models directory lacks a file ``spec`` needs (its
    ``model``, its ``mmproj``), each with why. A Hugging Face spec needs no file: llama-server
    downloads it on whichever node runs it. A spec's ``node`` rules out every other ready node."""
    needed = [path for path in (spec.model, spec.mmproj) if path] if spec.model is not None else []
    found = {}
    for node in _in_order(nodes):
        if node.ready and spec.node is not None and spec.node not in (node.name, node.hostname):
            found[node.name] = f"the spec's node is {spec.node}"
            continue
        known = facts.get(node.id)
        if not node.ready or known is None:
            continue
        missing = [path for path in needed if not known.has_file(path)]
        if missing:
            found[node.name] = " and ".join(missing) + f" not in the models directory of {node.hostname}"
    return found


def node_views(nodes: Sequence[SwarmNode], facts: Mapping[str, NodeFacts], ages: Mapping[str, float]) -> list[NodeView]:
    """The nodes as the listing shows them: ``facts`` the fresh ones, ``ages`` of every answer ever had."""
    views = []
    for node in _in_order(nodes):
        known = facts.get(node.id)
        age = ages.get(node.id)
        views.append(NodeView(name=node.name, hostname=node.hostname, ready=node.ready,
                              host_kind=known.host_kind if known else None,
                              gpus=len(known.gpus) if known else None, files=len(known.files) if known else None,
                              facts_age_s=None if age is None else round(age, 1),
                              nvml=known.nvml if known else None))
    return views


def known_names(nodes: Sequence[SwarmNode]) -> list[str]:
    """What a placement may name: each node by hostname; the manager's also as LOCAL_NODE."""
    names = {n.hostname for n in nodes} | {n.name for n in nodes}
    return sorted(names)
