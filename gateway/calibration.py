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
file (atomic write), so a restart does not forget them.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .placement import Demand

log = logging.getLogger("llamadock.calibration")

SAMPLES_KEPT = 8  # the overhead used is the largest of the last few: on the safe side, yet it follows a new driver
PLAUSIBLE_MAX = 4 * 2**30  # more than this is not CUDA overhead (a reading taken mid-load, another process)


@dataclass(frozen=True)
class Estimate:
    """The orchestrator's estimate of a model's memory, by part (bytes)."""
    weights: int
    kv_cache: int
    compute: int
    mmproj: int
    overhead: int
    margin: int

    @property
    def layered(self) -> int:
        """What llama.cpp spreads over GPUs by layer."""
        return self.weights + self.kv_cache + self.mmproj


def estimate_of(listing_model: dict) -> Estimate | None:
    """The listing's ``estimate`` (absent, or None when the spec sets ``memory``: then unknown by part)."""
    raw = listing_model.get("estimate")
    if not isinstance(raw, dict):
        return None
    try:
        return Estimate(*(int(raw.get(f"{part}_bytes") or 0) for part in
                          ("weights", "kv_cache", "compute", "mmproj", "overhead", "margin")))
    except (TypeError, ValueError):
        return None


def demand_for(need_bytes: int | None, estimate: Estimate | None, pools: list[str],
               overhead: Mapping[str, int]) -> Demand | None:
    """A model's need on a GPU host, before placement. ``overhead``: learned bytes per pool.

    Without an estimate by part, ``need_bytes`` is the whole need on one GPU, overhead unknown
    (so nothing is charged per GPU beyond it when it is split)."""
    if estimate is None:
        return Demand(need_bytes, {p: 0 for p in pools}, tuple(pools)) if need_bytes else None
    per_gpu = {p: estimate.compute + estimate.margin + overhead.get(p, estimate.overhead) for p in pools}
    return Demand(estimate.layered, per_gpu, tuple(pools))


def modelled_on_gpu(estimate: Estimate, share: float) -> int:
    """The buffers llama.cpp allocates on one GPU holding ``share`` of the layers (no CUDA overhead)."""
    return round(estimate.layered * share) + estimate.compute


def learn_from_process(process_bytes: int | None, estimate: Estimate | None, share: float) -> int | None:
    """Native Linux: the overhead a running server shows on one GPU, or None when it cannot tell."""
    if process_bytes is None or estimate is None or share <= 0:
        return None
    return _plausible(process_bytes - modelled_on_gpu(estimate, share))


def learn_from_device(used_before: int | None, used_after: int | None, estimate: Estimate | None, share: float,
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
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".gpu-overhead.")
            with os.fdopen(fd, "w") as out:
                out.write(body)
            os.replace(tmp, self.path)  # atomic: a reader sees the old file or the new one
        except OSError as exc:
            if not self._write_failed:
                self._write_failed = True
                log.warning("cannot save the learned GPU overheads to %s (%s): kept in memory only", self.path, exc)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
