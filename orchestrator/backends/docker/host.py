"""What kind of host the models run on: NVIDIA GPU or not, WSL2 or not.

``detect_host`` is pure: it reads the daemon's ``docker info`` (a dict) and the
configured mode. Asking the daemon, not the orchestrator's own container, is what
makes it right: the daemon's kernel and runtimes are the ones the models get.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GpuMode = Literal["auto", "nvidia", "none"]


@dataclass(frozen=True)
class HostFacts:
    gpu: bool
    # "nvidia": the NVIDIA container runtime / toolkit hook; "cdi": CDI devices only.
    gpu_driver: Literal["nvidia", "cdi"] | None = None
    wsl2: bool = False
    # Docker Desktop hands the GPU to containers itself; only a plain engine inside a
    # WSL2 distro needs /usr/lib/wsl and /dev/dxg passed by hand.
    docker_desktop: bool = False
    warnings: tuple[str, ...] = ()
    # The GPU indices the daemon lists (CDI devices, Docker >= 28.2); () when it does not say.
    gpu_indices: tuple[int, ...] = ()

    @property
    def kind(self) -> str:
        if not self.gpu:
            return "cpu"
        return "wsl2-nvidia" if self.wsl2 else "nvidia"


def _has_cdi_nvidia(info: dict) -> bool:
    devices = info.get("DiscoveredDevices") or []  # API >= 1.48
    return any(str(d.get("ID", "")).startswith("nvidia.com/gpu") for d in devices if isinstance(d, dict))


def _cdi_gpu_indices(info: dict) -> tuple[int, ...]:
    """``nvidia.com/gpu=0``, ``=1``, ...: the GPUs by index (the ``all`` and UUID names left out)."""
    devices = info.get("DiscoveredDevices") or []
    found = {int(name) for d in devices if isinstance(d, dict)
             for kind, _, name in [str(d.get("ID", "")).partition("=")]
             if kind == "nvidia.com/gpu" and name.isdigit()}
    return tuple(sorted(found))


def detect_host(info: dict, mode: GpuMode = "auto") -> HostFacts:
    kernel = str(info.get("KernelVersion", ""))
    wsl2 = "microsoft" in kernel.lower() or "wsl" in kernel.lower()
    desktop = str(info.get("OperatingSystem", "")).startswith("Docker Desktop")
    runtimes = info.get("Runtimes") or {}
    nvidia_runtime = "nvidia" in runtimes
    cdi = _has_cdi_nvidia(info)

    if mode == "none":
        return HostFacts(gpu=False, wsl2=wsl2, docker_desktop=desktop,
                         warnings=("GPU disabled by configuration (LLAMADOCK_GPU=none): models run on the CPU.",))
    if mode == "nvidia":
        # Forced: trust the user even when the daemon does not list the runtime
        # (Docker Desktop, or a toolkit configured only as a prestart hook).
        return HostFacts(gpu=True, gpu_driver="cdi" if cdi and not nvidia_runtime else "nvidia",
                         wsl2=wsl2, docker_desktop=desktop, gpu_indices=_cdi_gpu_indices(info))
    if nvidia_runtime or desktop and wsl2:
        return HostFacts(gpu=True, gpu_driver="nvidia", wsl2=wsl2, docker_desktop=desktop,
                         gpu_indices=_cdi_gpu_indices(info))
    if cdi:
        return HostFacts(gpu=True, gpu_driver="cdi", wsl2=wsl2, docker_desktop=desktop,
                         gpu_indices=_cdi_gpu_indices(info))
    hint = ("install the NVIDIA Container Toolkit inside the WSL2 distro and run "
            "`sudo nvidia-ctk runtime configure --runtime=docker`, then restart Docker"
            if wsl2 else
            "install the NVIDIA Container Toolkit and run `sudo nvidia-ctk runtime configure --runtime=docker`")
    return HostFacts(gpu=False, wsl2=wsl2, docker_desktop=desktop,
                     warnings=(f"No NVIDIA GPU visible to Docker: models run on the CPU (slow). To use the GPU, {hint}; "
                               "or set LLAMADOCK_GPU=nvidia to force it.",))
