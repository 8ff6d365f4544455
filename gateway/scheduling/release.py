"""Has a stopped model's GPU memory come back? A pure look at an NVML reading.

Docker says a container stopped when its process exited; the driver frees that process's
memory a moment later. Starting the next model before NVML shows it free is how two
models both "fit" and the second dies with CUDA out of memory. The lifecycle polls this
(as Ollama does) and sends ``Released``; the scheduler bounds the wait.
"""

from __future__ import annotations

from typing import Collection, Mapping, Sequence

from contract.pools import LOCAL_NODE, Pool, PoolId

from ..gpu import GpuStatus, devices_by_pool

SEEN_FREE = 0.75  # WSL2: this much of what it held back on the device counts as returned (others move too)


def memory_returned(status: GpuStatus | None, pids: Collection[int], used_before: Mapping[str, int],
                    held: Mapping[str, int], listed: Sequence[Pool] = ()) -> bool:
    """``pids``: the model's server PIDs; ``used_before``: device-wide used bytes per pool while it ran;
    ``held``: what it held per pool. Another node's GPU is not in this reading but in ``listed``
    (its agent's, in the orchestrator's listing): device-wide, as on WSL2. Unseen there too, it is
    never seen returned: its wait ends with the scheduler's release timeout (the safe side of a
    start that could run out of memory there)."""
    by_pool = devices_by_pool(status) if status is not None and status.available else {}
    remote = {p.id.key: p.total_bytes - p.free_bytes for p in listed
              if p.id.gpu is not None and p.total_bytes is not None and p.free_bytes is not None}
    for pool, bytes_held in held.items():
        if not bytes_held:
            continue
        if PoolId.parse(pool).node != LOCAL_NODE:
            before, now = used_before.get(pool), remote.get(pool)
            if before is None or now is None or before - now < SEEN_FREE * bytes_held:
                return False
            continue
        if status is None or not status.available:
            return False  # no NVML reading here: this box's GPU is not seen returned (the timeout ends it)
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
