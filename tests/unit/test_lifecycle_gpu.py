"""The effects around the scheduler on a GPU box: NVML faked at pynvml's seam, the orchestrator's
API answered by an httpx mock transport. A start carries its placement; the CUDA overhead is learned
from NVML and saved; a start that runs out of GPU memory twice is a 503 that explains."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from common.errors import ApiError
from contract.listing import MemoryEstimate
from contract.pools import Pool, PoolId
from gateway.gpu import GIB, NvmlReader
from gateway.scheduling.lifecycle import Lifecycle
from gateway.scheduling.inputs import Defaults
from gateway.metrics import GatewayMetrics
from gateway.scheduling.scheduler import Unload
from support.waiting import wait_until_async
from support.listing import listing, status
from test_gpu import FakeNvml, fake_gpu, proc

MiB = 2**20
ESTIMATE = {"weights_bytes": 1981 * MiB, "kv_cache_bytes": 128 * MiB, "compute_bytes": 66 * MiB, "mmproj_bytes": 0,
            "overhead_bytes": 700 * MiB, "margin_bytes": 32 * MiB, "total_bytes": 2907 * MiB, "host_bytes": 0}


def listed(name, state="stopped", pids=(), **fields):
    fields = {"need_bytes": ESTIMATE["total_bytes"], "estimate": ESTIMATE, **fields}
    return status(name, state, pids=pids, **fields)


class Orchestrator:
    def __init__(self, oom=()):
        self.starts: list[tuple[str, dict | None]] = []
        self.oom = set(oom)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        name, verb = request.url.path.split("/")[2:4]
        if verb == "start":
            self.starts.append((name, json.loads(request.content) if request.content else None))
            if name in self.oom:
                return httpx.Response(503, json={"error": {"message": "cudaMalloc failed: out of memory",
                                                           "code": "model_out_of_memory"}})
        return httpx.Response(200, content=listed(name, "ready" if verb == "start" else "stopped").model_dump_json())


async def lifecycle(tmp_path, nvml, orchestrator, clock, models):
    client = httpx.AsyncClient(transport=httpx.MockTransport(orchestrator))
    life = Lifecycle(client, "http://orchestrator", Defaults(state_dir=tmp_path, vram_reserve=0), NvmlReader(nvml),
                     GatewayMetrics(), clock=clock)
    life.listing = listing(*models)
    life._read_gpu()
    life.on_listing(listing(*models))
    return life


async def settle(life):
    while life._tasks:
        await asyncio.gather(*list(life._tasks))


async def test_a_start_is_placed_and_teaches_the_gpu_its_overhead(tmp_path, clock):
    nvml = FakeNvml([fake_gpu(uuid="GPU-a", memory=_mem(24 * GIB, 0)), fake_gpu(uuid="GPU-b", memory=_mem(12 * GIB, 0))])
    orchestrator = Orchestrator()
    life = await lifecycle(tmp_path, nvml, orchestrator, clock, [listed("q")])
    ticket = life.request("q")
    await settle(life)
    await ticket.wait()
    # 2.9 GB fits both; the 12 GB card is the tighter fit
    assert orchestrator.starts == [("q", {"gpus": [1], "tensor_split": None})]
    assert life.describe().models["q"].placement.text == "gpu1"
    # NVML now shows the server at 2762 MiB: 587 MiB over the modelled buffers (the H100 figure)
    nvml.gpus[1]["compute"] = [proc(4242, 2762 * MiB)]
    life.listing = listing(listed("q", "ready", [4242]))
    clock.now += 2
    life._read_gpu()
    assert life.overheads.overhead("GPU-b") == 587 * MiB
    assert json.loads((tmp_path / "gpu-overhead.json").read_text()) == {"overhead_bytes": {"GPU-b": [587 * MiB]}}
    view = life.describe().models["q"]
    assert (view.actual_bytes, view.overhead_learned_bytes, view.estimate) == (
        {"gpu1": 2762 * MiB}, {"gpu1": 587 * MiB}, MemoryEstimate(**ESTIMATE))
    ticket.release()
    await life.stop()


async def test_out_of_memory_twice_is_a_503_naming_need_free_and_loaded(tmp_path, clock):
    nvml = FakeNvml([fake_gpu(uuid="GPU-a", memory=_mem(8 * GIB, 0))])
    orchestrator = Orchestrator(oom={"q"})
    life = await lifecycle(tmp_path, nvml, orchestrator, clock, [listed("q")])
    ticket = life.request("q")
    await settle(life)
    with pytest.raises(ApiError) as caught:
        await ticket.wait()
    assert len(orchestrator.starts) == 2  # retried once
    assert caught.value.status == 503
    message = str(caught.value)
    assert "ran out of GPU memory while loading, also after making room" in message
    assert "It needs 2.8 GiB on one GPU; free: gpu0 8.0 GiB. Loaded: nothing." in message
    await life.stop()


def _mem(total, used):
    from types import SimpleNamespace
    return SimpleNamespace(total=total, used=used, free=total - used)


async def test_learning_waits_for_the_process_to_show_up_in_nvml(tmp_path, clock):
    nvml = FakeNvml([fake_gpu(uuid="GPU-a", memory=_mem(24 * GIB, 0))])
    life = await lifecycle(tmp_path, nvml, Orchestrator(), clock, [listed("q")])
    ticket = life.request("q")
    await settle(life)
    clock.now += 2
    life._read_gpu()  # the listing has no PID yet: nothing learned, still pending
    assert life.overheads.overhead("GPU-a") is None and "q" in life._learning
    nvml.gpus[0]["compute"] = [proc(4242, 2662 * MiB)]
    life.listing = listing(listed("q", "ready", [4242]))
    clock.now += 2
    life._read_gpu()
    assert life.overheads.overhead("GPU-a") == 487 * MiB and "q" not in life._learning
    ticket.release()
    await life.stop()


async def test_the_next_start_waits_until_nvml_shows_the_stopped_models_memory_back(tmp_path, clock):
    nvml = FakeNvml([fake_gpu(uuid="GPU-a", memory=_mem(8 * GIB, 6 * GIB), compute=[proc(11, 6 * GIB)])])
    orchestrator = Orchestrator()
    models = [listed("a", "ready", [11], need_bytes=6 * GIB, estimate=None),
              listed("b", need_bytes=6 * GIB, estimate=None)]
    life = await lifecycle(tmp_path, nvml, orchestrator, clock, models)
    ticket = life.request("b")
    await wait_until_async(lambda: life.state.models["a"].phase.value == "releasing", 5, "a releasing its memory")
    assert orchestrator.starts == []  # a's server still holds its 6 GB on the GPU
    nvml.gpus[0].update(compute=[], memory=_mem(8 * GIB, 0))  # the driver freed it
    await wait_until_async(lambda: orchestrator.starts, 5, "b started")
    assert orchestrator.starts == [("b", {"gpus": [0], "tensor_split": None})]
    await ticket.wait()
    ticket.release()
    await life.stop()


async def test_a_stops_kind_reaches_the_evictions_label_and_the_swap_count(tmp_path, clock):
    nvml = FakeNvml([fake_gpu(uuid="GPU-a", memory=_mem(24 * GIB, 0))])
    life = await lifecycle(tmp_path, nvml, Orchestrator(), clock,
                           [listed("a", "ready", swap_group="g"), listed("b", swap_group="g"), listed("c", "ready")])
    ticket = life.request("b")  # a, of its swap group, must go first
    life.dispatch(Unload("c", clock()))
    value = life.metrics.registry.get_sample_value
    assert value("llamadock_evictions_total", {"model": "a", "reason": "swap_group"}) == 1
    assert value("llamadock_swaps_total", {"model": "a"}) == 1
    assert value("llamadock_evictions_total", {"model": "c", "reason": "admin"}) == 1
    assert value("llamadock_swaps_total", {"model": "c"}) is None  # an unload is no swap
    ticket.release()
    await life.stop()


async def test_a_model_placed_on_another_nodes_pool_is_started_there(tmp_path, clock):
    nvml = FakeNvml([fake_gpu(uuid="GPU-a", memory=_mem(24 * GIB, 22 * GIB))])  # 2 GB free here: too little
    orchestrator = Orchestrator()
    life = await lifecycle(tmp_path, nvml, orchestrator, clock, [listed("q")])
    life._listed_pools = lambda: [Pool(id=PoolId(node="n2", gpu=1), uuid="GPU-n2", total_bytes=24 * GIB,
                                       free_bytes=24 * GIB)]
    life._sync(phases_from_listing=False)
    ticket = life.request("q")
    await settle(life)
    await ticket.wait()
    assert orchestrator.starts == [("q", {"node": "n2", "gpus": [1], "tensor_split": None})]
    assert life.describe().models["q"].placement.text == "n2/gpu1"
    assert life.describe().pools["n2/gpu1"].uuid == "GPU-n2"
    ticket.release()
    await life.stop()


async def test_a_model_on_another_nodes_gpu_is_measured_and_teaches_that_gpu_its_overhead(tmp_path, clock):
    # No GPU on the manager at all; node n2's agent reads one, and our model's use on it.
    nvml = FakeNvml([], init_error=FakeNvml.NVMLError(9))
    orchestrator = Orchestrator()
    life = await lifecycle(tmp_path, nvml, orchestrator, clock, [listed("q")])
    remote = Pool(id=PoolId(node="n2", gpu=0), uuid="GPU-n2", total_bytes=24 * GIB, free_bytes=24 * GIB,
                  model_bytes={})
    life._listed_pools = lambda: [remote]
    life._read_gpu()  # the loop's next reading: n2's GPU is seen (no GPU here, one there)
    life._sync(phases_from_listing=False)
    ticket = life.request("q")
    await settle(life)
    await ticket.wait()
    assert orchestrator.starts == [("q", {"node": "n2", "gpus": [0], "tensor_split": None})]
    # The agent now sees q's task container at 2762 MiB on that GPU: 587 MiB over the modelled buffers.
    remote = remote.model_copy(update={"free_bytes": 24 * GIB - 2762 * MiB, "model_bytes": {"q": 2762 * MiB},
                                       "models": ["q"]})
    life.listing = listing(listed("q", "ready"))
    clock.now += 2
    life._read_gpu()
    assert life.overheads.overhead("GPU-n2") == 587 * MiB
    assert life.describe().models["q"].actual_bytes == {"n2/gpu0": 2762 * MiB}
    ticket.release()
    await life.stop()
