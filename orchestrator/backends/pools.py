"""The pools of one node, and which instances run in each: what a single-box backend reports
(``Runtime.pools``). Keys and identity are the contract's (contract/pools.py)."""

from __future__ import annotations

from typing import Sequence

from pydantic import ValidationError

from common.errors import ApiError

from contract.placement import Placement
from contract.pools import LOCAL_NODE, Pool, PoolId
from contract.spec import ModelSpec

from .runtime import LIVE, Instance


def node_pools(gpus: Sequence[int], instances: Sequence[Instance], node: str = LOCAL_NODE) -> list[Pool]:
    """Its GPUs, each with the models running there; without GPUs (or none known), its memory
    budget with every running model."""
    live = [i for i in instances if i.state in LIVE]
    if not gpus:
        return [Pool(id=PoolId(node=node), models=sorted(i.model for i in live))]
    on: dict[int, list[str]] = {index: [] for index in gpus}
    for instance in live:
        for index in placed_gpus(instance, tuple(gpus)):
            on.setdefault(index, []).append(instance.model)
    return [Pool(id=PoolId(node=node, gpu=index), models=sorted(models)) for index, models in sorted(on.items())]


def placed_gpus(instance: Instance, every: tuple[int, ...]) -> tuple[int, ...]:
    """The GPUs an instance was made for: its placement label, else its spec's ``gpus``."""
    if instance.placement:
        try:
            return Placement.model_validate_json(instance.placement).gpus
        except ValidationError:
            pass  # written by a version whose placement no longer reads: by the spec, then
    gpus = instance.spec.gpus if instance.spec is not None else "all"
    return every if gpus == "all" else tuple(gpus)


def check_where(spec: ModelSpec, pools: Sequence[Pool], nodes: Sequence[str]) -> None:
    """A spec's ``node`` and ``gpus`` must name what exists: 400 naming what does. ``nodes``: every
    name a node goes by (the manager's as ``local`` and by hostname); ``pools``: the GPUs known
    per node (none known, e.g. no GPU or no agent report yet: the GPU indices are not judged)."""
    if spec.node is not None and spec.node not in nodes:
        where = "this box (the engine backend)" if list(nodes) == [LOCAL_NODE] else "this swarm"
        raise ApiError(400, f"No node {spec.node!r} in {where}; its nodes: {', '.join(sorted(nodes))}.",
                       "invalid_spec", "node")
    gpus: dict[str, list[int]] = {}
    for pool in pools:
        if pool.id.gpu is not None:
            gpus.setdefault(pool.id.node, []).append(pool.id.gpu)
    if spec.gpus == "all" or not gpus:
        return
    on = [n for n in ([spec.node] if spec.node is not None else list(gpus)) if n in gpus]
    if not on:
        return  # its node is known, its GPUs not (yet): placement says so if they are missing
    if not any(set(spec.gpus) <= set(gpus[n]) for n in on):
        known = "; ".join(f"{n}: {', '.join(map(str, sorted(g)))}" for n, g in sorted(gpus.items()) if n in on)
        where = f"on {spec.node}" if spec.node else "on any one node"
        raise ApiError(400, f"No GPUs {list(spec.gpus)} {where}; the GPUs there: {known}.", "invalid_spec", "gpus")
