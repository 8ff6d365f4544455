"""The orchestrator's side of an image upgrade on the in-memory runtime: the stack-wide default in
the catalog (a spec's own `image` wins), a candidate checked beside the model's own instance, the
swap, and a candidate that fails leaving the model as it was."""

from __future__ import annotations

import pytest

from common.errors import ApiError
from orchestrator import catalog as catalog_file
from test_operations import catalog_of, declared, make, model, run  # noqa: F401 (fixtures)


def test_a_new_default_image_is_written_with_the_previous_and_a_spec_image_wins(make):
    manager, runtime = make(declared(*model("a"), *model("own", "image: llama:mine")))

    async def scenario():
        await manager.refresh()
        before = manager.images()
        after = await manager.set_image("llama:next")
        await manager.start("a")
        await manager.start("own")
        return before, after
    before, after = run(scenario)
    assert (before.image, before.from_catalog) == ("llama:memory", False)
    assert (after.image, after.previous, after.from_catalog) == ("llama:next", "llama:memory", True)
    defaults = catalog_file.load_defaults(manager.settings.catalog_file)
    assert (defaults.llama_image, defaults.previous_llama_image) == ("llama:next", "llama:memory")
    assert runtime.instance("a").image == "llama:next" and runtime.instance("own").image == "llama:mine"
    assert set(catalog_of(manager)) == {"a", "own"}  # the models are as they were


def test_an_image_that_is_not_there_changes_nothing(make):
    manager, runtime = make(declared(*model("a")))
    before = manager.settings.catalog_file.read_text()
    runtime.missing_images.add("llama:nope")
    with pytest.raises(ApiError) as missing:
        run(lambda: manager.set_image("llama:nope"))
    assert (missing.value.status, missing.value.code) == (400, "image_unavailable")
    assert manager.settings.catalog_file.read_text() == before


def test_a_candidate_is_checked_beside_the_model_then_takes_its_place(make):
    manager, runtime = make(declared(*model("a")))

    async def scenario():
        await manager.start("a")
        old = runtime.instance("a").id
        tried = await manager.try_image("a", "llama:next", beside=True)
        during = (runtime.instance("a").id, runtime.candidate_of("a").image, tried.state)
        promoted = await manager.promote("a")
        return old, during, promoted
    old, (during_id, candidate_image, state_during), promoted = run(scenario)
    assert during_id == old and candidate_image == "llama:next" and state_during == "ready"  # the old one served
    assert promoted.state == "ready" and promoted.instance.image == "llama:next"
    assert runtime.instance("a").id != old and runtime.candidate_of("a") is None


def test_a_candidate_that_fails_is_removed_with_its_log_tail_and_the_model_keeps_serving(make):
    manager, runtime = make(declared(*model("a")))
    runtime.broken_images["llama:broken"] = ["exec: llama-server: not found"]

    async def scenario():
        await manager.start("a")
        old = runtime.instance("a").id
        with pytest.raises(ApiError) as failed:
            await manager.try_image("a", "llama:broken", beside=True)
        return old, failed.value, await manager.status("a")
    old, error, status = run(scenario)
    assert (error.status, error.code) == (422, "model_failed_on_image")
    assert error.log_tail == ["exec: llama-server: not found"] and "does not run on llama:broken" in error.message
    assert runtime.candidate_of("a") is None and runtime.instance("a").id == old and status.state == "ready"


def test_without_room_for_both_the_old_server_stops_and_comes_back_if_the_new_one_fails(make):
    manager, runtime = make(declared(*model("a")))
    runtime.silent_images.add("llama:mute")

    async def scenario():
        await manager.start("a")
        with pytest.raises(ApiError) as failed:
            await manager.try_image("a", "llama:mute", beside=False)
        return failed.value, await manager.status("a")
    error, status = run(scenario)
    assert "completion" in error.message and status.state == "ready"
    assert [c for c in runtime.calls if c[0] in ("stop", "start")] == [("stop", "a"), ("start", "a")]
