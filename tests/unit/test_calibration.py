"""Learning each GPU's CUDA overhead, and seeing a stopped model's memory return: pure decisions on
NVML readings taken through gateway.gpu from a fake pynvml (native Linux and WSL2 flavours)."""

from __future__ import annotations

import json
import os

import pynvml
import pytest

from contract.listing import MemoryEstimate
from contract.pools import Pool, PoolId
from gateway.scheduling.calibration import (SAMPLES_KEPT, OverheadStore, demand_for, learn_from_device, learn_from_process,
                                 modelled_on_gpu, overhead_from, remember, uuids_by_pool)
from gateway.gpu import GIB, NvmlReader
from gateway.scheduling.placement import Demand
from gateway.scheduling.release import memory_returned
from test_gpu import FakeNvml, err, fake_gpu, proc

MiB = 2**20
# The H100 row of shared GPU.md: 1B F16, ctx 4096: llama.cpp's own 1981 + 128 + 66 MiB, NVML 2762 MiB.
H100 = MemoryEstimate(weights_bytes=1981 * MiB, kv_cache_bytes=128 * MiB, compute_bytes=66 * MiB, mmproj_bytes=0,
                      overhead_bytes=700 * MiB, margin_bytes=32 * MiB)
WSL2_ERROR = err(pynvml.NVML_ERROR_UNKNOWN)  # what WSL2's NVML raises for process queries


def read(gpus, pids=None):
    return NvmlReader(FakeNvml(gpus)).read(pids or {})


# ---- learning ----------------------------------------------------------------------------------

@pytest.mark.parametrize("process, estimate, share, learned", [
    (2762 * MiB, H100, 1.0, 587 * MiB),  # the measured H100 overhead
    (2762 * MiB, None, 1.0, None),  # spec `memory`: no parts, nothing to learn
    (None, H100, 1.0, None),  # NVML could not tell the process's memory
    (1500 * MiB, H100, 1.0, 0),  # the buffers were modelled high: no overhead left, 0 is what we can tell
    (9 * GIB, H100, 1.0, None),  # implausible (a reading mid-load, a second process): ignored
    (66 * MiB + 2109 * MiB // 2 + 500 * MiB, H100, 0.5, 500 * MiB),  # half the layers of a split, plus compute
    (2762 * MiB, H100, 0.0, None),
], ids=["h100", "no-estimate", "no-reading", "modelled-high", "implausible", "split-half", "not-on-it"])
def test_learn_from_process(process, estimate, share, learned):
    assert learn_from_process(process, estimate, share) == learned


@pytest.mark.parametrize("before, after, undisturbed, learned", [
    (1 * GIB, 1 * GIB + 2762 * MiB, True, 587 * MiB),
    (1 * GIB, 1 * GIB + 2762 * MiB, False, None),  # another start or stop on that GPU meanwhile
    (None, 2 * GIB, True, None),
], ids=["clean", "disturbed", "no-before"])
def test_learn_from_device_wsl2(before, after, undisturbed, learned):
    assert learn_from_device(before, after, H100, 1.0, undisturbed) == learned


def test_learning_on_native_linux_through_nvml():
    status = read([fake_gpu(uuid="GPU-a", compute=[proc(4242, 2762 * MiB), proc(7, 300 * MiB)])], {"q": [4242]})
    dev = status.gpus[0]
    assert learn_from_process(dev.models["q"], H100, 1.0) == 587 * MiB


def test_learning_on_wsl2_through_nvml():
    before = read([fake_gpu(compute=WSL2_ERROR, memory=_mem(80 * GIB, 3 * GIB))]).gpus[0]
    after = read([fake_gpu(compute=WSL2_ERROR, memory=_mem(80 * GIB, 3 * GIB + 2762 * MiB))]).gpus[0]
    assert after.processes is None  # no per-process memory: the device-wide change it is
    assert learn_from_device(before.memory.used_bytes, after.memory.used_bytes, H100, 1.0, True) == 587 * MiB


def test_the_largest_recent_sample_is_used():
    samples = ()
    for value in (400, 590, 450):
        samples = remember(samples, value * MiB)
    assert overhead_from(samples) == 590 * MiB and overhead_from(()) is None
    for value in range(SAMPLES_KEPT):
        samples = remember(samples, 100 * MiB)
    assert overhead_from(samples) == 100 * MiB  # a new driver's lower overhead is followed, eventually


def test_need_on_a_gpu_uses_the_learned_overhead_else_the_default():
    assert modelled_on_gpu(H100, 1.0) == 2175 * MiB
    d = demand_for(None, H100, ["gpu0", "gpu1"], {"gpu1": 500 * MiB})
    assert d == Demand(2109 * MiB, {"gpu0": (66 + 32 + 700) * MiB, "gpu1": (66 + 32 + 500) * MiB}, ("gpu0", "gpu1"))
    assert demand_for(3 * GIB, None, ["gpu0"], {"gpu0": 1}) == Demand(3 * GIB, {"gpu0": 0}, ("gpu0",))
    assert demand_for(None, None, ["gpu0"], {}) is None


# ---- the file ----------------------------------------------------------------------------------

def test_store_survives_a_restart(tmp_path):
    path = tmp_path / "state" / "gpu-overhead.json"
    store = OverheadStore(path)
    store.learn("GPU-a", 587 * MiB)
    store.learn("GPU-a", 500 * MiB)
    assert json.loads(path.read_text()) == {"overhead_bytes": {"GPU-a": [587 * MiB, 500 * MiB]}}
    assert OverheadStore(path).overhead("GPU-a") == 587 * MiB
    assert OverheadStore(path).overhead("GPU-b") is None and OverheadStore(path).overhead(None) is None
    assert [p.name for p in path.parent.iterdir()] == ["gpu-overhead.json"]  # no temporary file left


def test_a_broken_file_is_ignored(tmp_path):
    path = tmp_path / "gpu-overhead.json"
    path.write_text("{not json")
    assert OverheadStore(path).samples == {}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_directory_keeps_it_in_memory_and_says_so_once(tmp_path, caplog):
    tmp_path.chmod(0o500)
    try:
        store = OverheadStore(tmp_path / "gpu-overhead.json")
        store.learn("GPU-a", 500 * MiB)
        store.learn("GPU-a", 600 * MiB)
    finally:
        tmp_path.chmod(0o700)
    assert store.overhead("GPU-a") == 600 * MiB
    assert sum("kept in memory only" in r.message for r in caplog.records) == 1


# ---- memory returned after a stop ------------------------------------------------------------

def _mem(total, used):
    from types import SimpleNamespace
    return SimpleNamespace(total=total, used=used, free=total - used)


@pytest.mark.parametrize("gpus, returned", [
    ([fake_gpu(compute=[proc(4242, 6 * GIB)])], False),  # native: its process is still listed
    ([fake_gpu(compute=[proc(7, GIB)])], True),  # gone (another process stays)
    ([fake_gpu(compute=WSL2_ERROR, memory=_mem(80 * GIB, 12 * GIB))], False),  # WSL2: used has not dropped
    ([fake_gpu(compute=WSL2_ERROR, memory=_mem(80 * GIB, 7 * GIB))], True),  # 5 of its 6 GB are back
], ids=["native-still-there", "native-gone", "wsl2-not-yet", "wsl2-back"])
def test_memory_returned(gpus, returned):
    assert memory_returned(read(gpus), pids=[4242], used_before={"gpu0": 12 * GIB},
                           held={"gpu0": 6 * GIB}) is returned


def test_another_nodes_pool_is_seen_returned_in_its_agents_reading_else_its_wait_ends_with_the_timeout():
    from contract.pools import Pool, PoolId

    gone = read([fake_gpu(compute=[proc(7, GIB)])])  # the local GPU shows its process gone
    assert memory_returned(gone, pids=[4242], used_before={}, held={"gpu0": 6 * GIB})
    # Not listed (no agent reading): never seen returned.
    assert not memory_returned(gone, pids=[4242], used_before={}, held={"gpu0": 6 * GIB, "n2/gpu0": 6 * GIB})
    assert memory_returned(gone, pids=[4242], used_before={}, held={"n2/gpu0": 0})  # held nothing there

    def n2(free_gb: float) -> list[Pool]:
        return [Pool(id=PoolId(node="n2", gpu=0), total_bytes=12 * GIB, free_bytes=int(free_gb * GIB))]
    held, before = {"n2/gpu0": 6 * GIB}, {"n2/gpu0": 8 * GIB}  # 8 of 12 GB used while it ran
    assert not memory_returned(None, [4242], before, held, n2(4))  # its agent still sees it used
    assert not memory_returned(None, [4242], before, held, n2(7))  # 3 of its 6 GB back: not yet
    assert memory_returned(None, [4242], before, held, n2(9))  # 5 of 6 back (no GPU here at all)


# ---- which card is behind a pool -----------------------------------------------------------------

def test_uuids_by_pool_from_nvml_here_and_from_the_orchestrator_elsewhere():
    local = read([fake_gpu(uuid="GPU-a")])
    listed = [Pool(id=PoolId(node="n2", gpu=0), uuid="GPU-n2"), Pool(id=PoolId(gpu=0), uuid="GPU-stale"),
              Pool(id=PoolId(node="n2"), uuid="not-a-gpu"), Pool(id=PoolId(node="n3", gpu=1))]
    assert uuids_by_pool(local, listed) == {"gpu0": "GPU-a", "n2/gpu0": "GPU-n2"}  # NVML's word wins here
    assert uuids_by_pool(None, listed) == {"gpu0": "GPU-stale", "n2/gpu0": "GPU-n2"}
    assert uuids_by_pool(local) == {"gpu0": "GPU-a"}
