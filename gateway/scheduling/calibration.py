"""The CUDA overhead of each GPU, learned from NVML, and what a model needs on a GPU.

The estimate (orchestrator/estimate.py) models the buffers llama.cpp allocates (weights,
KV cache, compute, projector) and adds a default per-process CUDA overhead (context,
cuBLAS workspace, graphs). That overhead differs per card and driver (400-590 MiB on
one H100; less on consumer cards), so it is learned per GPU, by UUID:

* native Linux: NVML's per-process use of a model's server minus the modelled buffers
  on that GPU;
* WSL2 (no per-process memory): the device-wide ``used`` change around the start,
  only when nothing else started or stopped on that GPU meanwhile.

The decisions are pure functions; ``OverheadStore`` keeps the samples in a small JSON
file (atomic write), so a restart does not forget them. The scheduler asks by pool key
(contract/pools.py); ``uuids_by_pool`` says which card is behind each key, so a card keeps
what it taught wherever it is numbered.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

from common.files import atomic_write
from contract.gpu import GpuStatus
from contract.listing import MemoryEstimate
from contract.pools import Pool

from ..gpu import devices_by_pool
from .placement import Demand

log = logging.getLogger("llamadock.calibration")

SAMPLES_KEPT = 8  # the overhead used is the largest of the last few: on the safe side, yet it follows a new driver
PLAUSIBLE_MAX = 4 * 2**30  # more than this is not CUDA overhead (a reading taken mid-load, another process)


def demand_for(need_bytes: int | None, estimate: MemoryEstimate | None, pools: list[str],
               overhead: Mapping[str, int]) -> Demand | None:
    """A model's need on a GPU host, before placement. ``overhead``: learned bytes per pool.

    Without an estimate by part, ``need_bytes`` is the whole need on one GPU, overhead unknown
    (so nothing is charged per GPU beyond it when it is split)."""
    if estimate is None:
        return Demand(need_bytes, {p: 0 for p in pools}, tuple(pools)) if need_bytes else None
    per_gpu = {p: estimate.compute_bytes + estimate.margin_bytes + overhead.get(p, estimate.overhead_bytes)
               for p in pools}
    return Demand(estimate.layered_bytes, per_gpu, tuple(pools))


def uuids_by_pool(gpu: GpuStatus | None, listed: Sequence[Pool] = ()) -> dict[str, str]:
    """The UUID of the card behind each GPU pool: the local ones from NVML, the others as the
    orchestrator reports them (NVML's word wins where both know a pool)."""
    uuids = {p.id.key: p.uuid for p in listed if p.uuid and p.id.gpu is not None}
    uuids.update({pool: dev.uuid for pool, dev in devices_by_pool(gpu).items() if dev.uuid})
    return uuids


def modelled_on_gpu(estimate: MemoryEstimate, share: float) -> int:
    """The buffers llama.cpp allocates on one GPU holding ``share`` of the layers (no CUDA overhead)."""
    return round(estimate.layered_bytes * share) + estimate.compute_bytes


def learn_from_process(process_bytes: int | None, estimate: MemoryEstimate | None, share: float) -> int | None:
    """Native Linux: the overhead a running server shows on one GPU, or None when it cannot tell."""
    if process_bytes is None or estimate is None or share <= 0:
        return None
    return _plausible(process_bytes - modelled_on_gpu(estimate, share))


def learn_from_device(used_before: int | None, used_after: int | None, estimate: MemoryEstimate | None, share: float,
                      undisturbed: bool) -> int | None:
    """WSL2: the overhead from the device-wide change around a start, if nothing else changed meanwhile."""
    if not undisturbed or used_before is None or used_after is None or estimate is None or share <= 0:
        return None
    return _plausible(used_after - used_before - modelled_on_gpu(estimate, share))


def _plausible(overhead: int) -> int | None:
    # Below zero the modelled buffers were high: no overhead left to learn, 0 is the truth we can tell.
    return max(0, overhead) if overhead <= PLAUSIBLE_MAX else None


def remember(samples: tuple[int, ...], new: int) -> tuple[int, ...]:
    return (*samples, new)[-SAMPLES_KEPT:]


def overhead_from(samples: tuple[int, ...]) -> int | None:
    return max(samples) if samples else None


class OverheadStore:
    """Learned overhead samples per GPU UUID, in a JSON file. If the file cannot be written,
    it says so once and keeps them in memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.samples: dict[str, tuple[int, ...]] = {}
        self._write_failed = False
        if path is not None:
            try:
                raw = json.loads(path.read_text())
                self.samples = {str(uuid): tuple(int(v) for v in values)[-SAMPLES_KEPT:]
                                for uuid, values in (raw.get("overhead_bytes") or {}).items()}
            except FileNotFoundError:
                pass
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                log.warning("ignoring the learned GPU overheads in %s: %s", path, exc)

    def overhead(self, uuid: str | None) -> int | None:
        return overhead_from(self.samples.get(uuid, ())) if uuid else None

    def learn(self, uuid: str, overhead: int) -> None:
        self.samples[uuid] = remember(self.samples.get(uuid, ()), overhead)
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        body = json.dumps({"overhead_bytes": {u: list(v) for u, v in sorted(self.samples.items())}}, indent=1)
        try:
            atomic_write(self.path, body)  # a reader sees the old file or the new one
        except OSError as exc:
            if not self._write_failed:
                self._write_failed = True
                log.warning("cannot save the learned GPU overheads to %s (%s): kept in memory only", self.path, exc)
