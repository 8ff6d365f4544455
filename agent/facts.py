"""A node's facts (contract/nodes.py) from its inputs: an NVML reading, the models directory, the
host's /proc. Pure functions, and one cache in front of them (``CachedFacts``)."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from common.nvml import NvmlReader
from contract.gpu import GpuStatus
from contract.nodes import GpuProcessUse, ModelFile, NodeFacts, NodeGpu

from .procfs import container_of, host_kind, memory_total

CACHE_S = 1.0  # a reading serves this long: the orchestrator asks every second, and a read costs ms


def gguf_files(models_dir: Path) -> list[ModelFile]:
    """Every *.gguf under ``models_dir``, by path relative to it; dot-directories (``.cache``, where
    downloads and KV slots go) and dot-files (partial downloads) are skipped."""
    found = []
    for directory, subdirectories, files in os.walk(models_dir):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        for name in files:
            if name.startswith(".") or not name.lower().endswith(".gguf"):
                continue
            path = Path(directory, name)
            try:
                stat = path.stat()
            except OSError:
                continue  # a broken link, or removed meanwhile
            found.append(ModelFile(name=path.relative_to(models_dir).as_posix(), size_bytes=stat.st_size,
                                   mtime=stat.st_mtime))
    return sorted(found, key=lambda f: f.name)


def node_gpus(status: GpuStatus, proc: Path) -> list[NodeGpu]:
    """A reading's GPUs, each process with the container its host PID runs in."""
    return [NodeGpu(index=gpu.index, uuid=gpu.uuid, name=gpu.name, total_bytes=gpu.memory.total_bytes,
                    free_bytes=gpu.memory.free_bytes,
                    processes=None if gpu.processes is None else [
                        GpuProcessUse(container_id=container_of(proc, p.pid), pid=p.pid, used_bytes=p.used_bytes)
                        for p in gpu.processes])
            for gpu in status.gpus]


def node_facts(hostname: str, status: GpuStatus, models_dir: Path, proc: Path, now: datetime) -> NodeFacts:
    return NodeFacts(hostname=hostname, host_kind=host_kind(proc), memory_total_bytes=memory_total(proc),
                     gpus=node_gpus(status, proc), nvml=None if status.available else status.reason,
                     files=gguf_files(models_dir), read_at=now)


class CachedFacts:
    """The node's facts, read again at most every ``CACHE_S`` (blocking: call it in a thread)."""

    def __init__(self, hostname: str, models_dir: Path, proc: Path, nvml: NvmlReader | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hostname, self.models_dir, self.proc = hostname, models_dir, proc
        self.nvml = nvml or NvmlReader()
        self.clock = clock
        self._lock = threading.Lock()  # one read at a time: concurrent asks share it
        self._last: tuple[float, NodeFacts] | None = None

    def get(self) -> NodeFacts:
        with self._lock:
            now = self.clock()
            if self._last is None or now - self._last[0] >= CACHE_S:
                facts = node_facts(self.hostname, self.nvml.read(), self.models_dir, self.proc,
                                   datetime.now(timezone.utc))
                self._last = (now, facts)
            return self._last[1]
