"""The orchestrator's refresh re-reads the catalog and walks models/ only when they changed on disk,
and a refresh in which only the uptimes moved on is not a change (the gateway is not woken for it):
an idle stack costs a few stat calls, not a YAML parse and a tree walk every few seconds."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import pytest

from orchestrator import catalog as catalog_file
from orchestrator.backends.docker.host import HostFacts
from orchestrator.manager import ModelManager
from orchestrator.settings import OrchestratorSettings

CATALOG = "models:\n  a:\n    model: a.gguf\n"


@pytest.fixture
def manager(tmp_path, monkeypatch) -> ModelManager:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "models.yaml").write_text(CATALOG)
    settings = OrchestratorSettings(admin_token="t", catalog_file=tmp_path / "models.yaml",
                                    models_dir=tmp_path / "models")
    no_containers = SimpleNamespace(containers=SimpleNamespace(list=lambda **_: []))
    return ModelManager(no_containers, settings, SimpleNamespace(project="p", network="n"),
                        HostFacts(gpu=False))


def one_model_manager(tmp_path, containers_list) -> ModelManager:
    """A manager of one declared model, "tiny", whose Docker answers ``containers.list`` with ``containers_list``."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models.yaml").write_text("models:\n  tiny:\n    model: m.gguf\n")
    settings = OrchestratorSettings(admin_token="t", catalog_file=tmp_path / "models.yaml",
                                    models_dir=tmp_path / "models")
    client = SimpleNamespace(containers=SimpleNamespace(list=containers_list))
    return ModelManager(client, settings, SimpleNamespace(project="p", network="llamadock_default"),
                        HostFacts(gpu=False))


def count_calls(monkeypatch, module, name) -> list:
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    return calls


def test_the_catalog_is_parsed_again_only_when_the_file_changes(manager, monkeypatch):
    parses = count_calls(monkeypatch, catalog_file, "load_catalog")
    first = manager._catalog_if_changed()
    assert manager._catalog_if_changed() == first and len(parses) == 1
    manager._available_if_changed(first[0])  # what a refresh reads, both
    assert not manager._files_changed()
    manager.settings.catalog_file.write_text(CATALOG + "  b:\n    model: b.gguf\n")
    assert manager._files_changed()
    specs, error = manager._catalog_if_changed()
    assert sorted(specs) == ["a", "b"] and error is None and len(parses) == 2


def test_models_dir_is_walked_again_only_when_a_directory_under_it_changes(manager, monkeypatch):
    walks = count_calls(monkeypatch, catalog_file, "undeclared_gguf_files")
    specs, _ = manager._catalog_if_changed()
    assert manager._available_if_changed(specs) == [] and manager._available_if_changed(specs) == []
    assert len(walks) == 1
    sub = manager.settings.models_dir / "org"
    sub.mkdir()
    (sub / "new.gguf").write_bytes(b"GGUF")
    assert manager._files_changed()
    assert manager._available_if_changed(specs) == ["org/new.gguf"] and len(walks) == 2
    (sub / "other.gguf").write_bytes(b"GGUF")  # in a subdirectory: its own mtime tells
    assert manager._available_if_changed(specs) == ["org/new.gguf", "org/other.gguf"] and len(walks) == 3


def test_hidden_directories_do_not_count(tmp_path):
    (tmp_path / ".cache").mkdir()
    before = catalog_file.tree_stamp(tmp_path)
    (tmp_path / ".cache" / "partial.gguf").write_bytes(b"x")
    assert catalog_file.tree_stamp(tmp_path) == before


def test_a_refresh_where_only_uptimes_moved_is_no_new_version(manager):
    async def scenario():
        first = await manager.refresh()
        version = first.version
        again = await manager.refresh()
        assert again.version == version
        manager.settings.catalog_file.write_text(CATALOG + "  b:\n    model: a.gguf\n")
        os.utime(manager.settings.catalog_file)
        assert (await manager.refresh()).version == version + 1
    asyncio.run(scenario())


def test_a_stop_that_begins_while_docker_is_read_is_not_reported_as_a_start(tmp_path):
    # The race behind two swap rivals running at once: a refresh read the container as running,
    # the stop began (its readiness forgotten), and the refresh then said "starting"; the gateway,
    # whose stop had been answered meanwhile, took that for a start it had not asked for.
    from test_model_status import attrs

    def containers_list(**_):
        manager._stops += 1  # what stop() does as it begins, while this refresh reads Docker
        manager._stop_began["tiny"] = manager._stops
        return [SimpleNamespace(attrs=attrs(health="starting"))]

    manager = one_model_manager(tmp_path, containers_list)

    async def scenario():
        manager._healthy = lambda ip: asyncio.sleep(0, result=False)  # the stopping server no longer answers
        return (await manager.refresh()).find("tiny")
    status = asyncio.run(scenario())
    assert (status.state, status.reason) == ("stopped", "stopping")


def test_a_stop_that_ends_while_docker_is_read_is_not_reported_ready(tmp_path):
    # The stop was under way when this refresh began and ended while it read Docker: the views it got
    # still say running and healthy. Listed as ready, that would reach the gateway after the stop's
    # answer and put the model back in its routes (seen as a flaky `unload` in the e2e tests).
    from test_model_status import attrs

    def containers_list(**_):
        manager._stopping.discard("tiny")  # what stop() does as it ends, while this refresh reads Docker
        return [SimpleNamespace(attrs=attrs(health="healthy"))]

    manager = one_model_manager(tmp_path, containers_list)
    manager._stops, manager._stop_began["tiny"] = 1, 1  # it began before this refresh
    manager._stopping.add("tiny")

    async def scenario():
        return (await manager.refresh()).find("tiny")
    status = asyncio.run(scenario())
    assert (status.state, status.reason) == ("stopped", "stopping")


def test_a_refresh_that_read_docker_before_a_start_never_outranks_the_starts_own(tmp_path):
    # Refresh A reads Docker (the model stopped), slowly; the model starts, and the start's own
    # refresh B reads it running. Were A to end after B, its stale "stopped" would get the newer
    # version: the gateway would drop the model and start its swap rival beside it.
    import threading

    from test_model_status import attrs

    first_read, started = threading.Event(), threading.Event()

    def containers_list(**_):
        if not first_read.is_set():
            first_read.set()
            started.wait(10)  # A's read is slow; the start happens meanwhile
            return [SimpleNamespace(attrs=attrs(status="exited", exit_code=143))]
        return [SimpleNamespace(attrs=attrs(health="healthy"))]

    manager = one_model_manager(tmp_path, containers_list)

    async def scenario():
        a = asyncio.create_task(manager.refresh())
        await asyncio.to_thread(first_read.wait, 10)
        b = asyncio.create_task(manager.refresh())  # the start's own, once the container runs
        # Were refreshes to run at once, b would end here while a still reads; one at a time, b
        # waits for a (this bound is how long it is given to show it does not).
        await asyncio.wait({b}, timeout=1.0)
        started.set()
        stale, fresh = await a, await b
        return stale.version, fresh.version, manager.listing.find("tiny").state
    stale_version, fresh_version, final = asyncio.run(scenario())
    assert fresh_version > stale_version and final == "ready"
