"""What the host's /proc tells the agent: which container a PID runs in, the kernel's kind, the
memory. Pure over a directory, so a fake /proc tree in a test reads the same as the host's own
(mounted read-only at /host/proc in the agent's container).

NVML reports host PIDs; the agent lives in its own PID namespace (Swarm services cannot share the
host's), so a PID is looked up in the host's /proc, not in its own.
"""

from __future__ import annotations

import re
from pathlib import Path

# The two forms Docker's cgroup paths take: cgroupfs (v1, and v2 with the cgroupfs driver)
# `.../docker/<id>`, and systemd's `.../docker-<id>.scope`.
_CONTAINER_ID = re.compile(r"(?:/docker/|/docker-)([0-9a-f]{64})(?:\.scope)?(?:/|$)")


def container_id_in(cgroup_text: str) -> str | None:
    """The Docker container id a ``/proc/<pid>/cgroup`` names (any line: v1 has one per controller,
    v2 one ``0::`` line), or None for a process in no container."""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        if found := _CONTAINER_ID.search(path):
            return found.group(1)
    return None


def container_of(proc: Path, pid: int) -> str | None:
    try:
        return container_id_in((proc / str(pid) / "cgroup").read_text())
    except OSError:  # gone meanwhile, or not visible
        return None


def is_wsl2(kernel_text: str) -> bool:
    """WSL2's kernel names itself: ``5.15.153.1-microsoft-standard-WSL2``."""
    lowered = kernel_text.lower()
    return "microsoft" in lowered or "wsl" in lowered


def host_kind(proc: Path) -> str:
    for name in ("sys/kernel/osrelease", "version"):
        try:
            return "wsl2" if is_wsl2((proc / name).read_text()) else "linux"
        except OSError:
            continue
    return "linux"


def memory_total(proc: Path) -> int | None:
    """MemTotal of /proc/meminfo, in bytes (None when unreadable)."""
    try:
        text = (proc / "meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
    return int(found.group(1)) * 1024 if found else None
