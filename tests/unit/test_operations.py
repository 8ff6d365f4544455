"""The orchestrator's operations (add, start, stop, remove, restart, reconcile) and the refresh races,
over the in-memory runtime: the manager's decisions and bookkeeping, in milliseconds, without Docker.
(The Docker backend keeps its own tests: the create arguments, the inspect reading, and the
integration and fault tests against a real daemon.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from common.errors import ApiError
from contract.placement import Placement
from contract.spec import ModelSpec
from orchestrator import catalog as catalog_file
from orchestrator.backends.memory import MemoryRuntime
from orchestrator.backends.runtime import Change
from orchestrator.manager import ModelManager
from orchestrator.settings import OrchestratorSettings

A = ModelSpec(name="a", model="a.gguf", memory="1GiB")  # `memory`: no estimate to read from the file


def declared(*lines: str) -> str:
    return "models:\n" + "".join(f"  {line}\n" for line in lines) if lines else "models: {}\n"


def model(name: str, *extra: str, file: str = "a.gguf") -> tuple[str, ...]:
    return (f"{name}:", f"  model: {file}", "  memory: 1GiB", *(f"  {e}" for e in extra))


@pytest.fixture
def make(tmp_path):
    def make(catalog: str = declared(), *, gpus=(), **settings) -> tuple[ModelManager, MemoryRuntime]:
        (tmp_path / "models").mkdir(exist_ok=True)
        for name in ("a.gguf", "b.gguf"):
            (tmp_path / "models" / name).write_bytes(b"GGUF")
        (tmp_path / "models.yaml").write_text(catalog)
        settings = OrchestratorSettings(admin_token="t", catalog_file=tmp_path / "models.yaml",
                                        models_dir=tmp_path / "models", **{"load_timeout_s": 5.0, **settings})
        runtime = MemoryRuntime(gpus=gpus)
        return ModelManager(runtime, settings), runtime
    return make


def run(scenario):
    return asyncio.run(asyncio.wait_for(scenario(), 10))


def catalog_of(manager: ModelManager) -> dict[str, ModelSpec]:
    return catalog_file.load_catalog(manager.settings.catalog_file)


async def until(condition) -> None:
    while not condition():
        await asyncio.sleep(0)


# ---- add -----------------------------------------------------------------------------------------

def test_add_starts_the_model_waits_for_it_and_declares_it(make):
    manager, runtime = make()
    status, created = run(lambda: manager.add(A))
    assert created and (status.state, status.declared) == ("ready", True)
    assert status.instance.state == "running" and status.pids and status.url == "http://memory-model-a:8080"
    assert catalog_of(manager) == {"a": A} and runtime.calls == [("run", "a")]


def test_adding_the_declared_spec_again_waits_for_the_running_instance(make):
    manager, runtime = make()

    async def scenario():
        await manager.add(A)
        first = runtime.instance("a").id
        status, created = await manager.add(A)
        return first, status, created
    first, status, created = run(scenario)
    assert not created and status.state == "ready" and runtime.instance("a").id == first
    assert runtime.calls == [("run", "a")]


def test_ten_concurrent_adds_of_one_model_make_one_instance(make):
    manager, runtime = make()

    async def scenario():
        return await asyncio.gather(*(manager.add(A) for _ in range(10)))
    answers = run(scenario)
    assert [created for _, created in answers].count(True) == 1
    assert runtime.calls == [("run", "a")] and len(runtime.by_id) == 1


def test_adding_another_spec_under_a_name_needs_replace(make):
    manager, runtime = make()
    bigger = A.model_copy(update={"ctx_size": 8192})

    async def scenario():
        await manager.add(A)
        first = runtime.instance("a").id
        with pytest.raises(ApiError) as refused:
            await manager.add(bigger)
        status, created = await manager.add(bigger, replace=True)
        return first, refused.value, status, created
    first, refused, status, created = run(scenario)
    assert (refused.status, refused.code) == (409, "model_exists")
    assert created and status.spec == bigger and runtime.instance("a").id != first
    assert catalog_of(manager)["a"] == bigger


def test_an_add_whose_file_is_missing_changes_nothing(make):
    manager, runtime = make()
    with pytest.raises(ApiError) as refused:
        run(lambda: manager.add(ModelSpec(name="x", model="absent.gguf")))
    assert (refused.value.status, refused.value.code) == (400, "invalid_model_source")
    assert runtime.calls == [] and catalog_of(manager) == {}


def test_a_name_that_is_another_models_alias_is_refused(make):
    manager, runtime = make(declared(*model("b", "aliases: [a]", file="b.gguf")))
    with pytest.raises(ApiError) as refused:
        run(lambda: manager.add(A))
    assert (refused.value.status, refused.value.code, refused.value.param) == (409, "name_taken", "name")
    assert runtime.calls == []


def test_a_server_that_exits_while_loading_is_removed_and_not_declared(make):
    manager, runtime = make()
    runtime.fail_next_start("a", exit_code=1, log=["loading", "error: bad magic"])
    with pytest.raises(ApiError) as failed:
        run(lambda: manager.add(A))
    assert (failed.value.status, failed.value.code) == (422, "model_failed_to_start")
    assert "exit code 1" in failed.value.message and failed.value.log_tail == ["loading", "error: bad magic"]
    assert runtime.instance("a") is None and catalog_of(manager) == {}


def test_a_missing_image_is_the_backends_error(make):
    manager, runtime = make()
    runtime.missing_images.add("llama:memory")
    with pytest.raises(ApiError) as refused:
        run(lambda: manager.add(A))
    assert refused.value.code == "image_unavailable" and runtime.calls == []


# ---- start and stop --------------------------------------------------------------------------------

def test_stop_keeps_the_instance_and_start_starts_that_one_again(make):
    manager, runtime = make(declared(*model("a")))

    async def scenario():
        started = await manager.start("a")
        first = runtime.instance("a").id
        stopped = await manager.stop("a")
        again = await manager.start("a")
        return first, started, stopped, again
    first, started, stopped, again = run(scenario)
    assert started.state == "ready" and (stopped.state, stopped.reason) == ("stopped", "stopped")
    assert again.state == "ready" and runtime.instance("a").id == first
    assert runtime.calls == [("run", "a"), ("stop", "a"), ("start", "a")]
    assert stopped.listing_version is None and stopped.instance.state == "exited"


def test_a_start_waits_until_the_server_answers(make):
    manager, runtime = make(declared(*model("a")))
    runtime.ready_on_start = False

    async def scenario():
        start = asyncio.create_task(manager.start("a"))
        await until(lambda: runtime.instance("a") is not None)
        listed = (await manager.refresh()).find("a")
        assert not start.done()
        runtime.answer("a")
        return listed, await start
    listed, started = run(scenario)
    assert (listed.state, listed.reason) == ("starting", "loading the model") and started.state == "ready"


def test_a_start_that_never_answers_times_out_and_removes_the_instance(make):
    manager, runtime = make(declared(*model("a")), load_timeout_s=0.2)
    runtime.ready_on_start = False
    with pytest.raises(ApiError) as failed:
        run(lambda: manager.start("a"))
    assert (failed.value.status, failed.value.code) == (504, "model_start_timeout")
    assert runtime.instance("a") is None


def test_out_of_gpu_memory_while_loading_is_its_own_error(make):
    manager, runtime = make(declared(*model("a")))
    runtime.fail_next_start("a", log=["ggml_backend_cuda_buffer_type_alloc_buffer: allocating 1024.00 MiB on "
                                      "device 0: cudaMalloc failed: out of memory"])
    with pytest.raises(ApiError) as failed:
        run(lambda: manager.start("a"))
    assert (failed.value.status, failed.value.code) == (503, "model_out_of_memory")


def test_a_stopped_instance_is_started_again_only_on_the_gpus_asked_for(make):
    manager, runtime = make(declared(*model("a")), gpus=(0, 1))

    async def scenario():
        await manager.start("a", Placement(gpus=(0,)))
        first = runtime.instance("a")
        await manager.stop("a")
        await manager.start("a", Placement(gpus=(0,)))  # the same GPUs: that instance again
        same = runtime.instance("a").id
        await manager.stop("a")
        await manager.start("a", Placement(gpus=(1,)))  # others: made again there
        return first, same, runtime.instance("a")
    first, same, moved = run(scenario)
    assert same == first.id and moved.id != first.id
    assert first.placement == Placement(gpus=(0,)).label() and moved.placement == Placement(gpus=(1,)).label()


def test_a_start_on_gpus_the_spec_does_not_allow_is_refused(make):
    manager, runtime = make(declared(*model("a", "gpus: [0]")), gpus=(0, 1))
    with pytest.raises(ApiError) as refused:
        run(lambda: manager.start("a", Placement(gpus=(1,))))
    assert (refused.value.status, refused.value.code) == (400, "invalid_placement") and runtime.calls == []


def test_stop_and_start_of_unknown_models_are_not_found(make):
    manager, _ = make()
    for operation in (manager.stop, manager.start, manager.restart, manager.remove):
        with pytest.raises(ApiError) as missing:
            run(lambda: operation("nope"))
        assert missing.value.code == "model_not_found"


# ---- restart and remove ---------------------------------------------------------------------------

def test_restart_bounces_the_instance_in_place_and_waits_for_it(make):
    manager, runtime = make(declared(*model("a")))

    async def scenario():
        await manager.start("a")
        first = runtime.instance("a").id
        status = await manager.restart("a")
        return first, status
    first, status = run(scenario)
    assert status.state == "ready" and runtime.instance("a").id == first
    assert runtime.calls[-1] == ("restart", "a")


def test_restart_of_a_declared_model_without_an_instance_makes_one(make):
    manager, runtime = make(declared(*model("a")))
    assert run(lambda: manager.restart("a")).state == "ready" and runtime.calls == [("run", "a")]


def test_remove_removes_the_instance_and_the_declaration(make):
    manager, runtime = make()

    async def scenario():
        await manager.add(A)
        await manager.remove("a")
        return manager.listing.find("a")
    assert run(scenario) is None
    assert runtime.instance("a") is None and catalog_of(manager) == {}


# ---- reconcile ------------------------------------------------------------------------------------

def test_reconcile_makes_the_runtime_match_the_catalog(make):
    manager, runtime = make(declared(*model("pre", "preload: true"), *model("lazy"), *model("changed"),
                                     *model("broken", "preload: true", file="absent.gguf")))

    async def scenario():
        # What an earlier run left: "changed" running from another spec, "left" that nothing declares.
        await runtime.run(ModelSpec(name="changed", model="b.gguf"))
        await runtime.run(ModelSpec(name="left", model="a.gguf"))
        first = runtime.instance("changed").id
        report = await manager.reconcile()
        return first, report, manager.listing.find("broken")
    first, report, broken = run(scenario)
    assert (report.started, report.recreated, report.removed) == (["pre"], ["changed"], ["left"])
    assert report.unchanged == ["lazy"] and list(report.failed) == ["broken"]
    assert runtime.instance("lazy") is None and runtime.instance("left") is None
    assert runtime.instance("changed").id != first and runtime.instance("pre").state == "running"
    assert broken.state == "failed" and "absent.gguf" in broken.reason


def test_reconcile_starts_a_stopped_preloaded_model_again(make):
    manager, runtime = make(declared(*model("pre", "preload: true")))

    async def scenario():
        await manager.start("pre")
        await manager.stop("pre")
        return await manager.reconcile()
    assert run(scenario).started == ["pre"] and runtime.calls[-1] == ("start", "pre")


# ---- what the runtime reports ---------------------------------------------------------------------------

def test_a_crash_the_runtime_reports_is_listed_and_forgets_readiness(make):
    manager, runtime = make(declared(*model("a")))

    async def scenario():
        await manager.start("a")
        instance = runtime.instance("a")
        runtime.crash("a", exit_code=1)
        crashed = (await manager.refresh()).find("a")
        ready_after = manager.records.is_ready("a", instance.id)
        return crashed, ready_after
    crashed, ready_after = run(scenario)
    assert (crashed.state, crashed.reason) == ("failed", "exited with code 1") and not ready_after


def test_a_change_wakes_the_refresh_loop(make):
    manager, runtime = make(declared(*model("a")))

    async def scenario():
        loop = asyncio.create_task(manager.refresh_loop())
        await manager.refresh()
        version = manager.listing.version
        runtime.put(replace(await runtime.run(A), health="healthy"))  # made outside the operations
        runtime._changed(Change())
        await until(lambda: manager.listing.version > version)
        loop.cancel()
        return manager.listing.find("a")
    assert run(scenario).state == "ready"


def test_the_listing_carries_the_pools_and_what_runs_there(make):
    manager, _ = make(declared(*model("a", "gpus: [1]"), *model("b", file="b.gguf")), gpus=(0, 1))

    async def scenario():
        await manager.start("a")
        return await manager.refresh()
    pools = {p.id.key: p.models for p in run(scenario).pools}
    assert pools == {"gpu0": [], "gpu1": ["a"]}


def test_without_gpus_the_pool_is_the_nodes_memory_budget(make):
    manager, _ = make(declared(*model("a")))

    async def scenario():
        await manager.start("a")
        return await manager.refresh()
    listed = run(scenario)
    assert [(p.id.key, p.models) for p in listed.pools] == [("budget", ["a"])]
    assert listed.find("a").instance.node == "local"


def test_logs_are_the_instances_output(make):
    manager, _ = make(declared(*model("a")))

    async def scenario():
        await manager.start("a")
        return [chunk async for chunk in await manager.logs("a", tail=10, follow=False)]
    assert run(scenario) == [b"a: listening\n"]


# ---- the refresh races --------------------------------------------------------------------------------

def test_a_stop_that_begins_while_the_runtime_is_read_is_not_reported_as_a_start(make):
    # The race behind two swap rivals running at once: a refresh read the instance as running,
    # the stop began (its readiness forgotten), and the refresh then said "starting"; the gateway,
    # whose stop had been answered meanwhile, took that for a start it had not asked for.
    manager, runtime = make(declared(*model("tiny")))
    runtime.ready_on_start = False  # the stopping server no longer answers

    async def scenario():
        await runtime.run(A.model_copy(update={"name": "tiny"}))
        stops = []

        async def stop_meanwhile():  # while this refresh reads the runtime, a whole stop happens
            runtime.reading = None
            stops.append(asyncio.create_task(manager.stop("tiny")))
            await until(lambda: ("stop", "tiny") in runtime.calls and not manager.records.stopping())
        runtime.reading = stop_meanwhile
        status = (await manager.refresh()).find("tiny")
        await stops[0]
        return status
    status = run(scenario)
    assert (status.state, status.reason) == ("stopped", "stopping")


def test_a_stop_that_ends_while_the_runtime_is_read_is_not_reported_ready(make):
    # The stop was under way when this refresh began and ended while it read the runtime: the
    # instance it got still says running and healthy. Listed as ready, that would reach the gateway
    # after the stop's answer and put the model back in its routes (seen as a flaky `unload`).
    manager, runtime = make(declared(*model("tiny")))

    async def scenario():
        made = await runtime.run(A.model_copy(update={"name": "tiny"}))
        runtime.put(replace(runtime.by_id[made.id], health="healthy"))
        gate, real_stop = asyncio.Event(), runtime.stop

        async def slow_stop(instance):
            await gate.wait()
            await real_stop(instance)
        runtime.stop = slow_stop
        stop = asyncio.create_task(manager.stop("tiny"))
        await until(lambda: "tiny" in manager.records.stopping())  # it began before this refresh

        async def stop_ends():
            runtime.reading = None
            gate.set()
            await until(lambda: not manager.records.stopping())
        runtime.reading = stop_ends
        status = (await manager.refresh()).find("tiny")
        await stop
        return status
    status = run(scenario)
    assert (status.state, status.reason) == ("stopped", "stopping")


def test_a_refresh_that_read_the_runtime_before_a_start_never_outranks_the_starts_own(make):
    # Refresh A reads the runtime (the model stopped), slowly; the model starts, and the start's own
    # refresh B reads it running. Were A to end after B, its stale "stopped" would get the newer
    # version: the gateway would drop the model and start its swap rival beside it.
    manager, runtime = make(declared(*model("tiny")))

    async def scenario():
        made = await runtime.run(A.model_copy(update={"name": "tiny"}))
        await runtime.stop(made)
        first_read, started = asyncio.Event(), asyncio.Event()

        async def slow_read():
            runtime.reading = None
            first_read.set()
            await started.wait()  # A's read is slow; the start happens meanwhile
        runtime.reading = slow_read
        a = asyncio.create_task(manager.refresh())
        await first_read.wait()
        b = asyncio.create_task(manager.refresh())  # the start's own, once the instance runs
        # Were refreshes to run at once, b would end here while a still reads; one at a time, b
        # waits for a (this bound is how long it is given to show it does not).
        await asyncio.wait({b}, timeout=0.5)
        await runtime.start(made)
        started.set()
        stale, fresh = await a, await b
        return stale.version, fresh.version, manager.listing.find("tiny").state
    stale_version, fresh_version, final = run(scenario)
    assert fresh_version > stale_version and final == "ready"


# ---- through the orchestrator's API ---------------------------------------------------------------------

def test_a_start_or_stop_answer_is_as_new_as_the_listing_that_shows_it(make):
    # What the gateway relies on to skip a listing made before the answer (test_listing_order.py):
    # the answer's listing_version is the version of a listing that already shows it.
    from fastapi.testclient import TestClient

    from contract.listing import Listing
    from orchestrator.app import create_app

    manager, _ = make(declared(*model("a")))
    auth = {"authorization": "Bearer t"}
    with TestClient(create_app(manager.settings, manager)) as client:
        before = client.get("/models", headers=auth).json()["version"]
        started = client.post("/models/a/start", headers=auth).json()
        after_start = Listing.model_validate(client.get("/models", headers=auth).json())
        stopped = client.post("/models/a/stop", headers=auth).json()
        after_stop = Listing.model_validate(client.get("/models", headers=auth).json())
    assert started["state"] == "ready" and started["listing_version"] == after_start.version > before
    assert after_start.find("a").state == "ready" and after_start.find("a").instance.state == "running"
    assert stopped["state"] == "stopped" and stopped["listing_version"] == after_stop.version > after_start.version
    assert after_stop.find("a").state == "stopped" and [p.models for p in after_stop.pools] == [[]]
