"""The gateway's own node's GPUs: NVML is read by common/nvml.py (also what each swarm node's
agent reads its GPUs with); names are re-exported here for the gateway's modules.

A reading is of the gateway's own node: ``device_pool`` is the one place a device becomes a
pool key (contract/pools.py), so other nodes' pools, reported by the orchestrator, never clash.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.nvml import GIB, NvmlReader, model_totals, read_gpu, read_memory, read_processes
from contract.gpu import Gpu, GpuMemory, GpuStatus
from contract.pools import LOCAL_NODE, Pool, gpu_pool

__all__ = ["GIB", "Gpu", "GpuStatus", "NvmlReader", "device_pool", "devices_by_pool", "model_totals", "read_gpu",
           "read_memory", "read_processes"]


def device_pool(device: Gpu) -> str:
    """The pool key of a device: by its index on its node (NVML's here: the local node)."""
    return gpu_pool(device.index, device.node)


def with_other_nodes(status: GpuStatus, listed: Sequence[Pool]) -> GpuStatus:
    """The local NVML reading plus the GPUs of other nodes as the orchestrator lists them (their
    agents' reading: name, UUID, memory, our models' use), for /gpu and /status on a swarm, and
    for the lifecycle's learning and measuring on every node."""
    others = [Gpu(index=p.id.gpu, node=p.id.node, name=p.name, uuid=p.uuid,
                  memory=GpuMemory(total_bytes=p.total_bytes, free_bytes=p.free_bytes,
                                   used_bytes=None if p.total_bytes is None or p.free_bytes is None
                                   else p.total_bytes - p.free_bytes),
                  # Its processes are known by model only (the agent maps them to our tasks' containers).
                  processes=None if p.model_bytes is None else [], models=p.model_bytes)
              for p in listed if p.id.gpu is not None and p.id.node != LOCAL_NODE]
    if not others:
        return status
    local = status.gpus if status.available else []
    return status.model_copy(update={"available": True, "reason": None, "gpus": [*local, *others]})


def devices_by_pool(status: GpuStatus | None) -> dict[str, Gpu]:
    """A reading's devices by pool key (none without a reading)."""
    return {device_pool(dev): dev for dev in (status.gpus if status is not None else [])}
