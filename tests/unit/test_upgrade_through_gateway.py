"""`make llama-upgrade` / `llama-rollback` through both services (the orchestrator's app on the
in-memory runtime, the gateway's app), with a 350 MiB budget: running models move one at a time
(beside the old server when there is room, else in its place), stopped ones at their next start,
ones with their own image not at all, and a model that fails on the new image stays on its own."""

from __future__ import annotations

import pytest

from contract.images import UpgradeReport
from contract.errors import error_detail
from orchestrator import catalog as catalog_file
from test_add_through_scheduler import ADMIN, running, stack  # noqa: F401 (fixture)
from support.waiting import wait_until


def upgrade(client, image):
    return client.post("/admin/llama/upgrade", json={"image": image}, headers=ADMIN)


def load(client, name):
    answer = client.post(f"/admin/models/{name}/load", headers=ADMIN)
    assert answer.status_code == 200, answer.text


def add(client, name, mib, **more):
    answer = client.post("/admin/models", json={"name": name, "model": "m.gguf", "memory": f"{mib}MiB", **more},
                         headers=ADMIN, params={"start": "false"})
    assert answer.status_code == 201, answer.text


def test_an_upgrade_moves_running_models_and_leaves_the_rest_for_their_next_start(stack):
    client, runtime, catalog = stack
    wait_until(lambda: "pinned" in running(runtime), 10, "the pinned model")
    add(client, "a", 40)
    add(client, "big", 150)
    add(client, "idle", 10)
    add(client, "own", 10, image="llama:mine")
    load(client, "a")
    load(client, "big")  # 50 + 40 + 150 leave 110 MiB: a second a fits, a second big does not
    answer = upgrade(client, "llama:next")
    report = UpgradeReport.model_validate_json(answer.content)
    assert answer.status_code == 200, answer.text
    assert sorted(report.moved) == ["a", "big", "pinned"] and report.later == ["idle"]
    assert report.own_image == ["own"] and report.failed == [] and report.previous == "llama:memory"
    assert {runtime.instance(n).image for n in ("a", "big", "pinned")} == {"llama:next"}
    candidates = [c for c in runtime.calls if c[0] in ("run candidate", "stop")]
    assert ("stop", "big") in candidates and ("stop", "a") not in candidates  # big in its place, a beside
    load(client, "idle")
    assert runtime.instance("idle").image == "llama:next"
    assert catalog_file.load_defaults(catalog).llama_image == "llama:next"


def test_a_model_that_fails_on_the_new_image_stays_on_its_own_and_the_report_has_its_log(stack):
    client, runtime, catalog = stack
    wait_until(lambda: "pinned" in running(runtime), 10, "the pinned model")
    runtime.broken_images["llama:broken"] = ["llama-server: cannot open shared object file"]
    before = runtime.instance("pinned").id
    report = UpgradeReport.model_validate_json(upgrade(client, "llama:broken").content)
    (failed,) = report.failed
    assert failed.name == "pinned" and failed.log_tail == ["llama-server: cannot open shared object file"]
    assert runtime.instance("pinned").id == before and runtime.candidate_of("pinned") is None
    assert catalog_file.load_catalog(catalog)["pinned"].image == "llama:memory"  # stays on what it ran


def test_a_rollback_returns_to_the_previous_image(stack):
    client, runtime, catalog = stack
    wait_until(lambda: "pinned" in running(runtime), 10, "the pinned model")
    upgrade(client, "llama:next")
    answer = client.post("/admin/llama/rollback", headers=ADMIN)
    report = UpgradeReport.model_validate_json(answer.content)
    assert (report.image, report.previous, report.moved) == ("llama:memory", "llama:next", ["pinned"])
    assert runtime.instance("pinned").image == "llama:memory"


@pytest.mark.parametrize("body, status, code", [
    ({"image": "llama:nope"}, 400, "image_unavailable"),
    ({"image": ""}, 400, None),
    ({"colour": "red"}, 400, None),
])
def test_an_upgrade_to_an_image_that_is_not_there_changes_nothing(stack, body, status, code):
    client, runtime, catalog = stack
    runtime.missing_images.add("llama:nope")
    before = catalog.read_text()
    answer = client.post("/admin/llama/upgrade", json=body, headers=ADMIN)
    assert answer.status_code == status and error_detail(answer.content) is not None, answer.text
    if code:
        assert error_detail(answer.content).code == code and "Nothing was changed" in answer.text
    assert catalog.read_text() == before


def test_a_rollback_with_nothing_before_is_a_clear_409(stack):
    client, _, _ = stack
    answer = client.post("/admin/llama/rollback", headers=ADMIN)
    assert answer.status_code == 409 and error_detail(answer.content).code == "no_previous_image"
