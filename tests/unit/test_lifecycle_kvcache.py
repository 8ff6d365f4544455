"""Where the lifecycle carries out a planned stop, the model's slots are saved first, and never for
longer than the keeper's bound. The orchestrator and the model's server are httpx mock transports
here (the real server saves and restores in tests/integration/test_kvcache_llama.py)."""

from __future__ import annotations

import asyncio
import time

import httpx

from gateway.gpu import NvmlReader
from gateway.kvcache.files import CacheDir
from gateway.kvcache.keeper import KvKeeper
from gateway.metrics import GatewayMetrics
from gateway.scheduling.inputs import Defaults
from gateway.scheduling.lifecycle import Lifecycle
from gateway.scheduling.scheduler import Unload
from support.listing import listing, status
from support.waiting import wait_until_async
from test_gpu import FakeNvml
from test_kvcache_files import slot_file

URL = "http://model-m:8080"


def ready(name="m"):
    made = status(name, "ready", url=URL)
    return made.model_copy(update={"kv_key": "key1"})


async def lifecycle(tmp_path, model_server, calls, budget_s):
    def orchestrator(request: httpx.Request) -> httpx.Response:
        name, verb = request.url.path.split("/")[2:4]
        calls.append(("orchestrator", verb, time.monotonic()))
        return httpx.Response(200, content=status(name, "stopped").model_dump_json())

    metrics = GatewayMetrics()
    (tmp_path / "m").mkdir()
    keeper = KvKeeper(CacheDir(tmp_path, max_bytes=2**30, min_free_bytes=0, disk_free=lambda p: 2**40), metrics,
                      save_budget_s=budget_s, client=httpx.AsyncClient(transport=httpx.MockTransport(model_server)))
    life = Lifecycle(httpx.AsyncClient(transport=httpx.MockTransport(orchestrator)), "http://orchestrator",
                     Defaults(state_dir=None), NvmlReader(FakeNvml([], init_error=FakeNvml.NVMLError(9))), metrics,
                     keeper=keeper)
    life.on_listing(listing(ready()))
    return life, keeper, metrics


async def test_an_unload_saves_the_slots_before_the_stop(tmp_path):
    calls = []

    async def model_server(request: httpx.Request) -> httpx.Response:
        calls.append(("model", request.url.path, time.monotonic()))
        if request.url.path == "/slots":
            return httpx.Response(200, json=[{"id": 0, "n_ctx": 512, "is_processing": False, "id_task": 3,
                                              "n_prompt_tokens": 3}])
        if request.url.path == "/metrics":
            return httpx.Response(200, text="llamacpp:prompt_tokens_total 500\nllamacpp:prompt_seconds_total 0.5\n")
        name = (await request.aread()).decode().split('"')[3]
        slot_file(tmp_path / "m" / name, [1, 2, 3])  # what llama-server writes
        return httpx.Response(200, json={"id_slot": 0, "filename": name, "n_saved": 3, "n_written": 4000,
                                         "timings": {"save_ms": 1.0}})

    life, keeper, metrics = await lifecycle(tmp_path, model_server, calls, budget_s=5.0)
    life.dispatch(Unload("m", life.clock()))
    await wait_until_async(lambda: any(c[1] == "stop" for c in calls), 5, "the stop")
    assert [c[1] for c in calls] == ["/slots", "/metrics", "/slots/0", "stop"]
    [entry] = keeper.files.entries("m")
    assert list(entry.tokens) == [1, 2, 3] and entry.prompt_tokens_per_s == 1000.0
    assert life.describe().models["m"].kv_saved == 1
    assert metrics.kv_saves.labels("m")._value.get() == 1


async def test_a_save_that_hangs_holds_the_stop_for_the_bound_and_no_longer(tmp_path):
    calls = []

    async def model_server(request: httpx.Request) -> httpx.Response:
        calls.append(("model", request.url.path, time.monotonic()))
        await asyncio.sleep(60)  # a server that never answers
        return httpx.Response(500)

    life, keeper, metrics = await lifecycle(tmp_path, model_server, calls, budget_s=0.3)
    asked = time.monotonic()
    life.dispatch(Unload("m", life.clock()))
    await wait_until_async(lambda: any(c[1] == "stop" for c in calls), 5, "the stop")
    stopped = next(c[2] for c in calls if c[1] == "stop")
    assert 0.3 <= stopped - asked < 1.5
    assert metrics.kv_save_failures.labels("m", "timeout")._value.get() == 1
    assert keeper.files.entries("m") == []
