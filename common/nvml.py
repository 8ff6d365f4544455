"""GPU status through NVML (the ``pynvml`` module of nvidia-ml-py).

Every measured value is optional: WSL2's NVML has no utilization and raises
``NVMLError_Unknown`` on process queries, and other drivers/boards raise
``NotSupported`` for power or temperature. One failing read only blanks that
field, never the rest of the GPU or the other GPUs.

``NvmlReader.read`` blocks (NVML calls into the driver); call it through
``asyncio.to_thread`` from async code.

Shared by the gateway (gateway/gpu.py: its own node's GPUs) and each swarm node's agent (agent/:
the GPUs of the node it runs on).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Any

from contract.gpu import Gpu, GpuMemory, GpuProcess, GpuStatus, GpuUtilization

log = logging.getLogger(__name__)

GIB = 1024**3
# NVML_VALUE_NOT_AVAILABLE_ulonglong: what NVML puts in a 64-bit counter it cannot measure.
_NOT_AVAILABLE = 2**64 - 1
_NO_MODELS: Mapping[str, Collection[int]] = MappingProxyType({})

# Plain-English reasons for the init failures an operator can actually hit, keyed by
# pynvml's error class name (so a fake module with the same classes maps the same way).
_NO_DRIVER = "no NVIDIA driver visible here (no GPU, or the container was started without GPU access)"
_INIT_REASONS = {
    "NVMLError_LibraryNotFound": f"NVML library not found: {_NO_DRIVER}",
    "NVMLError_DriverNotLoaded": f"NVIDIA driver not loaded: {_NO_DRIVER}",
    "NVMLError_NoPermission": "no permission to open the NVIDIA device files",
    "NVMLError_LibRmVersionMismatch": (
        "NVML library and kernel driver versions differ (driver upgraded without a reboot?)"
    ),
}


def _call(nvml: Any, fn: str, *args: Any) -> Any:
    """One NVML read, or None if it fails.

    Catches every Exception, not just NVMLError: pynvml raises NVMLLibraryMismatchError
    (a plain Exception) for functions the installed driver lacks, and a status read
    must degrade per field rather than fail the request.
    """
    try:
        return getattr(nvml, fn)(*args)
    except Exception as err:  # noqa: BLE001 - see docstring
        log.debug("NVML %s failed: %r", fn, err)
        return None


def _text(value: Any) -> str | None:
    # pynvml before 11.5 returned bytes for names, UUIDs and versions.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def _bytes(value: Any) -> int | None:
    return None if value is None or value == _NOT_AVAILABLE else int(value)


def _watts(milliwatts: Any) -> float | None:
    return None if milliwatts is None else milliwatts / 1000.0


def _cuda_version(value: Any) -> str | None:
    # NVML encodes CUDA 12.4 as 12040.
    return None if value is None else f"{value // 1000}.{value % 1000 // 10}"


def read_memory(nvml: Any, handle: Any) -> GpuMemory:
    info = _call(nvml, "nvmlDeviceGetMemoryInfo", handle)
    if info is None:
        return GpuMemory()
    return GpuMemory(total_bytes=_bytes(info.total), used_bytes=_bytes(info.used), free_bytes=_bytes(info.free))


def read_utilization(nvml: Any, handle: Any) -> GpuUtilization:
    rates = _call(nvml, "nvmlDeviceGetUtilizationRates", handle)
    if rates is None:
        return GpuUtilization()
    return GpuUtilization(gpu_percent=rates.gpu, memory_percent=rates.memory)


def read_processes(nvml: Any, handle: Any, pid_to_model: Mapping[int, str]) -> list[GpuProcess] | None:
    """Union of compute and graphics processes, one entry per PID; None if either query fails.

    A half-answered query gives None rather than a partial list, so per-model totals
    are never silently under-counted.
    """
    by_pid: dict[int, GpuProcess] = {}
    for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        procs = _call(nvml, query, handle)
        if procs is None:
            return None
        for proc in procs:
            by_pid.setdefault(
                proc.pid,
                GpuProcess(pid=proc.pid, used_bytes=_bytes(proc.usedGpuMemory), model=pid_to_model.get(proc.pid)),
            )
    return sorted(by_pid.values(), key=lambda p: p.pid)


def model_totals(processes: list[GpuProcess] | None) -> dict[str, int] | None:
    if processes is None:
        return None
    totals: dict[str, int] = {}
    for proc in processes:
        if proc.model is not None:
            # A process whose memory NVML cannot tell (Windows WDDM) adds 0 but still lists the model.
            totals[proc.model] = totals.get(proc.model, 0) + (proc.used_bytes or 0)
    return totals


def read_gpu(nvml: Any, index: int, pid_to_model: Mapping[int, str]) -> Gpu:
    handle = _call(nvml, "nvmlDeviceGetHandleByIndex", index)
    if handle is None:
        # A lost or inaccessible GPU stays listed, so indexes keep lining up with nvidia-smi.
        return Gpu(index=index)
    processes = read_processes(nvml, handle, pid_to_model)
    return Gpu(
        index=index,
        name=_text(_call(nvml, "nvmlDeviceGetName", handle)),
        uuid=_text(_call(nvml, "nvmlDeviceGetUUID", handle)),
        memory=read_memory(nvml, handle),
        utilization=read_utilization(nvml, handle),
        temperature_c=_call(nvml, "nvmlDeviceGetTemperature", handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0)),
        power_w=_watts(_call(nvml, "nvmlDeviceGetPowerUsage", handle)),
        power_limit_w=_watts(_call(nvml, "nvmlDeviceGetEnforcedPowerLimit", handle)),
        processes=processes,
        models=model_totals(processes),
    )


class NvmlReader:
    """Reads GPU status through a module with pynvml's API (the test seam).

    NVML is initialised once, lazily, and kept. A failed init is retried on a
    later read, but at most once per ``retry_s`` so a GPU-less box does not pay
    for a library search on every poll.
    """

    def __init__(self, nvml: Any = None, *, clock: Callable[[], float] = time.monotonic, retry_s: float = 30.0):
        self._nvml = nvml  # None: import pynvml on first use
        self._clock = clock
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self._ready = False
        self._retry_at: float | None = None
        self._reason: str | None = None

    def _ensure_init(self) -> str | None:
        """None when NVML is usable, else the reason it is not."""
        with self._lock:
            if self._ready:
                return None
            now = self._clock()
            if self._retry_at is not None and now < self._retry_at:
                return self._reason
            try:
                if self._nvml is None:
                    import pynvml

                    self._nvml = pynvml
                self._nvml.nvmlInit()
            except ImportError:
                reason = "the nvidia-ml-py package (pynvml) is not installed in this environment"
            except Exception as err:  # noqa: BLE001 - any init failure means "no GPU status", not a crash
                reason = _INIT_REASONS.get(type(err).__name__, f"NVML failed to start: {err}")
            else:
                self._ready = True
                return None
            log.info("GPU status unavailable: %s", reason)
            self._reason, self._retry_at = reason, now + self._retry_s
            return reason

    def read(self, model_pids: Mapping[str, Collection[int]] = _NO_MODELS) -> GpuStatus:
        """Status of every GPU; ``model_pids`` maps model name -> host PIDs of its server."""
        reason = self._ensure_init()
        if reason is not None:
            return GpuStatus(available=False, reason=reason)
        nvml = self._nvml
        driver = _text(_call(nvml, "nvmlSystemGetDriverVersion"))
        cuda = _cuda_version(_call(nvml, "nvmlSystemGetCudaDriverVersion"))
        count = _call(nvml, "nvmlDeviceGetCount")
        if not count:
            why = "NVML could not count the GPUs" if count is None else "the NVIDIA driver reports no GPUs"
            return GpuStatus(available=False, reason=why, driver_version=driver, cuda_driver_version=cuda)
        pid_to_model = {pid: model for model, pids in model_pids.items() for pid in pids}
        gpus = [read_gpu(nvml, index, pid_to_model) for index in range(count)]
        return GpuStatus(available=True, driver_version=driver, cuda_driver_version=cuda, gpus=gpus)
