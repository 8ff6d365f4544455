"""Where the gateway's scheduler placed a model: the wire type of ``POST /models/{name}/start``.

One definition for both services: the gateway builds it from its placement decision
(gateway/scheduling/placement.py ``Placement.wire``), the orchestrator hands it to its runtime backend.
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .pools import LOCAL_NODE, budget_pool, gpu_pool


class Placement(BaseModel):
    """The node and GPUs a model runs on, and how its layers are split across them; no GPUs: the
    node's memory (a node without a GPU, chosen by its memory budget)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str = Field(LOCAL_NODE, description="The node it runs on (`local` on a single-box backend).")
    gpus: tuple[int, ...] = Field(description="GPU indices on that node (as NVML and nvidia-smi number them); "
                                  "empty: none, the node's memory budget.")
    tensor_split: tuple[int, ...] | None = Field(
        None, description="Share of the layers per GPU, in the order of `gpus` (llama-server --tensor-split).")

    @model_validator(mode="after")
    def _consistent(self) -> "Placement":
        if any(i < 0 for i in self.gpus) or len(set(self.gpus)) != len(self.gpus):
            raise ValueError("gpus must be distinct GPU indices >= 0")
        if self.tensor_split is not None and (len(self.tensor_split) != len(self.gpus) or not self.gpus
                                              or any(s <= 0 for s in self.tensor_split)):
            raise ValueError("tensor_split needs one positive number per GPU")
        return self

    @property
    def pools(self) -> tuple[str, ...]:
        """The pool keys it holds (contract/pools.py)."""
        if not self.gpus:
            return (budget_pool(self.node),)
        return tuple(gpu_pool(i, self.node) for i in self.gpus)

    def label(self) -> str:
        """A stable text form (a container label): equal placements, equal labels. The default
        node is left out, so labels written before nodes existed still compare equal."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        data.setdefault("gpus", list(self.gpus))
        data.setdefault("tensor_split", None)
        return json.dumps(data, sort_keys=True)
