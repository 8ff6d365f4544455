"""The node agent's facts from its inputs: a fake NVML module (pynvml's API, as test_gpu.py fakes
it), a fake host /proc tree in tmp_path (cgroup v1 and v2 paths, the kernel's release), and a real
models directory; and its HTTP API."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pynvml
import pytest
from fastapi.testclient import TestClient

from agent.app import agent_app
from agent.facts import CachedFacts, gguf_files, node_facts
from agent.procfs import container_id_in, container_of, host_kind, memory_total
from common.nvml import NvmlReader
from contract.nodes import NodeFacts
from test_gpu import GIB, FakeNvml, err, fake_gpu, proc

A = "a" * 64
B = "0123456789abcdef" * 4
NOW = datetime(2026, 12, 3, 17, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("cgroup, expected", [
    # cgroup v1: one line per controller, the cgroupfs driver
    (f"12:memory:/docker/{A}\n11:cpu,cpuacct:/docker/{A}\n1:name=systemd:/docker/{A}\n", A),
    # cgroup v2 with the systemd driver
    (f"0::/system.slice/docker-{B}.scope\n", B),
    # cgroup v2 with the cgroupfs driver, and a nested cgroup under the container's
    (f"0::/docker/{B}/init\n", B),
    # v1 with systemd: the id is in the scope name
    (f"4:devices:/system.slice/docker-{A}.scope\n", A),
    # a host process (Xorg, a desktop app) and a process of another runtime
    ("0::/user.slice/user-1000.slice/session-2.scope\n", None),
    ("0::/kubepods/besteffort/pod1/" + "c" * 64 + "\n", None),
    # not 64 hex: not a container id
    ("0::/docker/abc123\n", None),
    ("", None),
])
def test_container_id_from_a_cgroup_file(cgroup, expected):
    assert container_id_in(cgroup) == expected


def fake_proc(root: Path, *, osrelease: str | None = "6.1.0-28-amd64", version: str | None = None,
              meminfo: str | None = "MemTotal:       32768000 kB\nMemFree:  100 kB\n",
              cgroups: dict[int, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if osrelease is not None:
        (root / "sys" / "kernel").mkdir(parents=True)
        (root / "sys" / "kernel" / "osrelease").write_text(osrelease + "\n")
    if version is not None:
        (root / "version").write_text(version)
    if meminfo is not None:
        (root / "meminfo").write_text(meminfo)
    for pid, text in (cgroups or {}).items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "cgroup").write_text(text)
    return root


def test_container_of_a_pid_reads_the_hosts_proc(tmp_path):
    root = fake_proc(tmp_path / "proc", cgroups={100: f"0::/system.slice/docker-{A}.scope\n", 7: "0::/init.scope\n"})
    assert container_of(root, 100) == A
    assert container_of(root, 7) is None
    assert container_of(root, 999) is None  # gone since NVML listed it


@pytest.mark.parametrize("osrelease, version, kind", [
    ("5.15.153.1-microsoft-standard-WSL2", None, "wsl2"),
    ("6.1.0-28-amd64", None, "linux"),
    (None, "Linux version 5.15.90.1-microsoft-standard-WSL2 (root@1f2a) #1 SMP", "wsl2"),  # no osrelease: /proc/version
    (None, "Linux version 6.8.0-45-generic (buildd@lcy02) #45-Ubuntu SMP", "linux"),
    (None, None, "linux"),  # nothing readable
])
def test_wsl2_is_told_by_the_kernels_name(tmp_path, osrelease, version, kind):
    assert host_kind(fake_proc(tmp_path / "proc", osrelease=osrelease, version=version)) == kind


def test_memory_total(tmp_path):
    assert memory_total(fake_proc(tmp_path / "a")) == 32768000 * 1024
    assert memory_total(fake_proc(tmp_path / "b", meminfo=None)) is None
    assert memory_total(fake_proc(tmp_path / "c", meminfo="MemFree: 1 kB\n")) is None


def models_dir(root: Path) -> Path:
    for name, size in (("tiny.gguf", 10), ("sub/x.gguf", 20), ("sub/deeper/Y.GGUF", 5), ("notes.txt", 3),
                       (".partial.gguf", 4), (".cache/downloaded.gguf", 30), (".cache/kv/m/slot.gguf", 1)):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    os.utime(root / "tiny.gguf", (1_700_000_000, 1_700_000_000))
    (root / "broken.gguf").symlink_to(root / "nowhere.gguf")
    return root


def test_gguf_files_skip_dot_directories_and_dot_files(tmp_path):
    files = gguf_files(models_dir(tmp_path / "models"))
    assert [(f.name, f.size_bytes) for f in files] == [("sub/deeper/Y.GGUF", 5), ("sub/x.gguf", 20), ("tiny.gguf", 10)]
    assert files[-1].mtime == 1_700_000_000


def test_facts_of_a_gpu_node_map_processes_to_containers(tmp_path):
    nvml = FakeNvml([
        fake_gpu(memory=pynvml.c_nvmlMemory_t(total=24 * GIB, free=20 * GIB, used=4 * GIB),
                 compute=[proc(100, 3 * GIB)], graphics=[proc(7, 64 * 1024**2)]),
        fake_gpu(name="NVIDIA GeForce RTX 3060", uuid="GPU-0001", compute=[proc(200, None)]),
    ])
    root = fake_proc(tmp_path / "proc", cgroups={100: f"0::/system.slice/docker-{A}.scope\n",
                                                   200: f"5:memory:/docker/{B}\n", 7: "0::/init.scope\n"})
    facts = node_facts("box2", NvmlReader(nvml).read(), models_dir(tmp_path / "models"), root, NOW)
    assert (facts.hostname, facts.host_kind, facts.nvml, facts.memory_total_bytes) == \
        ("box2", "linux", None, 32768000 * 1024)
    gpu0, gpu1 = facts.gpus
    assert (gpu0.index, gpu0.uuid, gpu0.name, gpu0.total_bytes, gpu0.free_bytes) == \
        (0, "GPU-0000", "NVIDIA H100 80GB HBM3", 24 * GIB, 20 * GIB)
    assert [(p.pid, p.container_id, p.used_bytes) for p in gpu0.processes] == [(7, None, 64 * 1024**2),
                                                                              (100, A, 3 * GIB)]
    assert [(p.pid, p.container_id, p.used_bytes) for p in gpu1.processes] == [(200, B, None)]
    assert [f.name for f in facts.files] == ["sub/deeper/Y.GGUF", "sub/x.gguf", "tiny.gguf"]
    # One typed contract: what the agent serves parses back into the same facts.
    assert NodeFacts.model_validate_json(facts.model_dump_json()) == facts


def test_wsl2_processes_unknown_stay_unknown(tmp_path):
    nvml = FakeNvml([fake_gpu(compute=err(pynvml.NVML_ERROR_UNKNOWN))])
    facts = node_facts("desk", NvmlReader(nvml).read(), tmp_path, fake_proc(
        tmp_path / "proc", osrelease="5.15.153.1-microsoft-standard-WSL2"), NOW)
    assert facts.host_kind == "wsl2" and facts.gpus[0].processes is None and facts.nvml is None


def test_a_cpu_node_says_why_it_read_no_gpu(tmp_path):
    nvml = FakeNvml([], init_error=err(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    facts = node_facts("box3", NvmlReader(nvml).read(), tmp_path, fake_proc(tmp_path / "proc"), NOW)
    assert facts.gpus == [] and "NVML library not found" in facts.nvml
    assert "gateway" not in facts.nvml  # the agent's reason names no other service


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_facts_are_cached_for_a_second_then_read_again(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    clock = Clock()
    cached = CachedFacts("box1", models, fake_proc(tmp_path / "proc"), NvmlReader(FakeNvml([fake_gpu()])), clock=clock)
    first = cached.get()
    (models / "new.gguf").write_bytes(b"x")
    clock.now += 0.5
    assert cached.get() is first  # within the second: the same reading
    clock.now += 0.6
    assert [f.name for f in cached.get().files] == ["new.gguf"]


def test_the_api_serves_facts_and_health(tmp_path):
    cached = CachedFacts("box1", models_dir(tmp_path / "models"), fake_proc(tmp_path / "proc"),
                         NvmlReader(FakeNvml([fake_gpu()])))
    with TestClient(agent_app(cached)) as client:
        assert client.get("/health").json() == {"status": "ok"}
        answer = client.get("/facts")
    assert answer.status_code == 200
    facts = NodeFacts.model_validate_json(answer.content)
    assert facts.hostname == "box1" and [g.uuid for g in facts.gpus] == ["GPU-0000"]
    assert facts.has_file("sub/x.gguf") and not facts.has_file("downloaded.gguf")
