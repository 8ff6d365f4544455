"""Has a stopped model's GPU memory come back? A pure look at an NVML reading.

Docker says a container stopped when its process exited; the driver frees that process's
memory a moment later. Starting the next model before NVML shows it free is how two
models both "fit" and the second dies with CUDA out of memory. The lifecycle polls this
(as Ollama does) and sends ``Released``; the scheduler bounds the wait.
"""

from __future__ import annotations

from typing import Collection, Mapping

from contract.pools import LOCAL_NODE, PoolId

from ..gpu import GpuStatus, devices_by_pool

SEEN_FREE = 0.75  # WSL2: this much of what it held back on the device counts as returned (others move too)


def memory_returned(status: GpuStatus, pids: Collection[int], used_before: Mapping[str, int],
                    held: Mapping[str, int]) -> bool:
    """``pids``: the model's server PIDs; ``used_before``: device-wide used bytes per pool while it ran;
    ``held``: what it held per pool. Another node's pool is not in this reading: never seen
    returned here, its wait ends with the scheduler's release timeout (the safe side of a start
    that could run out of memory there)."""
    by_pool = devices_by_pool(status)
    for pool, bytes_held in held.items():
        if not bytes_held:
            continue
        if PoolId.parse(pool).node != LOCAL_NODE:
            return False
        dev = by_pool.get(pool)
        if dev is None:
            continue
        if dev.processes is not None and pids:
            if any(p.pid in pids for p in dev.processes):
                return False  # native Linux: its process is still listed on that GPU
            continue
        before, now = used_before.get(pool), dev.memory.used_bytes
        if before is None or now is None or before - now < SEEN_FREE * bytes_held:
            return False  # WSL2: not yet seen back on the device
    return True
