"""The gateway's own node's GPUs: NVML is read by common/nvml.py (also what each swarm node's
agent reads its GPUs with); names are re-exported here for the gateway's modules.

A reading is of the gateway's own node: ``device_pool`` is the one place a device becomes a
pool key (contract/pools.py), so other nodes' pools, reported by the orchestrator, never clash.
"""

from __future__ import annotations

from common.nvml import GIB, NvmlReader, model_totals, read_gpu, read_memory, read_processes
from contract.gpu import Gpu, GpuStatus
from contract.pools import gpu_pool

__all__ = ["GIB", "Gpu", "GpuStatus", "NvmlReader", "device_pool", "devices_by_pool", "model_totals", "read_gpu",
           "read_memory", "read_processes"]


def device_pool(device: Gpu) -> str:
    """The pool key of a device NVML reports here: a GPU of the local node."""
    return gpu_pool(device.index)


def devices_by_pool(status: GpuStatus | None) -> dict[str, Gpu]:
    """A reading's devices by pool key (none without a reading)."""
    return {device_pool(dev): dev for dev in (status.gpus if status is not None else [])}
