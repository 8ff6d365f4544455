"""The orchestrator's side of an add through the scheduler (check: nothing written; declare: the
catalog only) and of an edit (a PATCH validated as an add, then the model's instance brought in
line), on the in-memory runtime."""

from __future__ import annotations

import pytest

from common.errors import ApiError
from contract.spec import ModelSpec
from test_operations import A, catalog_of, declared, make, model, run  # noqa: F401 (fixtures)


def test_a_check_writes_and_starts_nothing_and_says_what_the_model_needs(make):
    manager, runtime = make()
    check = run(lambda: manager.check(A))
    assert check.spec == A and check.need_bytes == 2**30 and not check.unchanged and check.previous is None
    assert catalog_of(manager) == {} and runtime.calls == []


def test_a_check_refuses_what_an_add_refuses(make):
    manager, runtime = make(declared(*model("a")))
    with pytest.raises(ApiError) as taken:
        run(lambda: manager.check(ModelSpec(name="b", model="a.gguf", aliases=("a",))))
    with pytest.raises(ApiError) as missing:
        run(lambda: manager.check(ModelSpec(name="c", model="nope.gguf")))
    runtime.missing_images.add("llama:new")
    with pytest.raises(ApiError) as image:
        run(lambda: manager.check(ModelSpec(name="d", model="a.gguf", image="llama:new")))
    assert (taken.value.status, taken.value.code) == (409, "name_taken")
    assert (missing.value.status, missing.value.code) == (400, "invalid_model_source")
    assert (image.value.status, image.value.code) == (400, "image_unavailable")


def test_declare_writes_the_catalog_and_starts_nothing(make):
    manager, runtime = make()

    async def scenario():
        return await manager.declare(A), await manager.declare(A)
    (status, created), (_, again) = run(scenario)
    assert created and status.state == "stopped" and status.declared
    assert catalog_of(manager) == {"a": A} and runtime.calls == []
    assert again is False  # the same spec again: nothing to do


def test_declaring_a_replacement_removes_the_instance_of_the_old_spec(make):
    manager, runtime = make()
    bigger = A.model_copy(update={"ctx_size": 8192})

    async def scenario():
        await manager.add(A)
        return await manager.declare(bigger, replace=True)
    status, created = run(scenario)
    assert created and runtime.instance("a") is None and catalog_of(manager)["a"].ctx_size == 8192


def test_an_edit_changes_one_field_and_keeps_the_rest(make):
    manager, runtime = make(declared(*model("a", "ctx_size: 2048")))
    status = run(lambda: manager.edit("a", {"ttl": 600, "pinned": True}))
    spec = catalog_of(manager)["a"]
    assert (spec.ttl, spec.pinned, spec.ctx_size, int(spec.memory)) == (600, True, 2048, 2**30)
    assert status.state == "ready"  # pinned: started now, as reconcile would


def test_an_edit_of_a_running_model_recreates_it_and_null_is_the_default(make):
    manager, runtime = make(declared(*model("a", "ctx_size: 2048")))

    async def scenario():
        await manager.start("a")
        before = runtime.instance("a").id
        await manager.edit("a", {"ctx_size": None})
        return before
    before = run(scenario)
    assert catalog_of(manager)["a"].ctx_size == 4096 and runtime.instance("a").id != before
    assert runtime.instance("a").state == "running"


@pytest.mark.parametrize("changes, param, words", [
    ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
    ({"ttl": "soon"}, "ttl", "valid number"),
    ({"args": ["--mmproj", "x.gguf"]}, "args", "use `mmproj`"),
    ({"name": "b"}, "name", "cannot be renamed"),
])
def test_a_bad_edit_is_a_400_naming_the_field_and_the_catalog_is_untouched(make, changes, param, words):
    manager, runtime = make(declared(*model("a")))
    before = manager.settings.catalog_file.read_text()
    with pytest.raises(ApiError) as refused:
        run(lambda: manager.edit("a", changes))
    assert refused.value.status == 400 and refused.value.param == param and words in refused.value.message
    assert manager.settings.catalog_file.read_text() == before


def test_an_edit_the_server_will_not_start_with_puts_the_old_spec_back(make):
    manager, runtime = make(declared(*model("a")))

    async def scenario():
        await manager.start("a")
        runtime.fail_next_start("a", log=("error: bad flag",))
        await manager.edit("a", {"args": ["--bogus"]})
    with pytest.raises(ApiError) as failed:
        run(scenario)
    assert failed.value.code == "model_failed_to_start" and failed.value.log_tail == ["error: bad flag"]
    assert catalog_of(manager)["a"].args == () and runtime.instance("a").spec.args == ()
