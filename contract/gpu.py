"""What NVML sees, as the gateway serves it on ``GET /gpu`` (and inside ``/status``).

Every measured value is optional: WSL2's NVML has no utilization nor per-process memory, and
some boards report no power or temperature (gateway/gpu.py reads them).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class GpuMemory(BaseModel):
    total_bytes: int | None = Field(None, description="Total GPU memory in bytes.")
    used_bytes: int | None = Field(None, description="GPU memory in use by all processes, in bytes.")
    free_bytes: int | None = Field(None, description="GPU memory free, in bytes.")


class GpuUtilization(BaseModel):
    gpu_percent: int | None = Field(None, description="Percent of the last sample period a kernel ran (null on WSL2).")
    memory_percent: int | None = Field(
        None, description="Percent of the sample period memory was read or written (bandwidth, not capacity)."
    )


class GpuProcess(BaseModel):
    pid: int = Field(description="Process id as the driver reports it (host PID namespace).")
    used_bytes: int | None = Field(None, description="GPU memory used by this process; null when NVML cannot tell.")
    model: str | None = Field(None, description="Model whose server owns this PID; null for other processes.")


class Gpu(BaseModel):
    index: int = Field(description="NVML device index (on its node).")
    node: str = Field("local", description="The node it is in: `local` for the gateway's own; on a swarm another "
                      "node's, as its agent reports it (memory only).")
    name: str | None = Field(None, description="Product name, e.g. 'NVIDIA H100 80GB HBM3'.")
    uuid: str | None = Field(None, description="Stable device UUID ('GPU-...').")
    memory: GpuMemory = Field(default_factory=GpuMemory, description="Memory capacity and use.")
    utilization: GpuUtilization = Field(default_factory=GpuUtilization, description="Recent utilization.")
    temperature_c: int | None = Field(None, description="Core temperature in degrees Celsius.")
    power_w: float | None = Field(None, description="Current board power draw in watts.")
    power_limit_w: float | None = Field(None, description="Enforced power limit in watts.")
    processes: list[GpuProcess] | None = Field(
        None, description="Compute and graphics processes on this GPU; null when NVML cannot list them (WSL2)."
    )
    models: dict[str, int] | None = Field(
        None, description="Per served model, GPU bytes used by its processes here; null when processes are unknown."
    )


class GpuStatus(BaseModel):
    available: bool = Field(description="True when NVML answered and sees at least one GPU.")
    reason: str | None = Field(None, description="Why no GPU status is available; null when available.")
    driver_version: str | None = Field(None, description="NVIDIA driver version, e.g. '550.54.15'.")
    cuda_driver_version: str | None = Field(None, description="Highest CUDA version the driver supports, e.g. '12.4'.")
    gpus: list[Gpu] = Field(default_factory=list, description="One entry per GPU, by NVML index.")
