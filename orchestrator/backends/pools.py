"""The pools of one node, and which instances run in each: what a single-box backend reports
(``Runtime.pools``). Keys and identity are the contract's (contract/pools.py)."""

from __future__ import annotations

from typing import Sequence

from pydantic import ValidationError

from contract.placement import Placement
from contract.pools import LOCAL_NODE, Pool, PoolId

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
