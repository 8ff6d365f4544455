"""The orchestrator's refresh re-reads the catalog and walks models/ only when they changed on disk,
and a refresh in which only the uptimes moved on is not a change (the gateway is not woken for it):
an idle stack costs a few stat calls, not a YAML parse and a tree walk every few seconds.

The refresh races (a stop or a start while a refresh holds a stale read of the runtime) are in
test_operations.py, staged on the in-memory runtime."""

from __future__ import annotations

import asyncio
import os

import pytest

from orchestrator import catalog as catalog_file
from orchestrator.backends.memory import MemoryRuntime
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
    return ModelManager(MemoryRuntime(), settings)


def count_calls(monkeypatch, module, name) -> list:
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    return calls


def test_the_catalog_is_parsed_again_only_when_the_file_changes(manager, monkeypatch):
    parses = count_calls(monkeypatch, catalog_file, "load_catalog")
    first = manager.live._catalog_if_changed()
    assert manager.live._catalog_if_changed() == first and len(parses) == 1
    manager.live._available_if_changed(first[0])  # what a refresh reads, both
    assert not manager.live._files_changed()
    manager.settings.catalog_file.write_text(CATALOG + "  b:\n    model: b.gguf\n")
    assert manager.live._files_changed()
    specs, error = manager.live._catalog_if_changed()
    assert sorted(specs) == ["a", "b"] and error is None and len(parses) == 2


def test_models_dir_is_walked_again_only_when_a_directory_under_it_changes(manager, monkeypatch):
    walks = count_calls(monkeypatch, catalog_file, "undeclared_gguf_files")
    specs, _ = manager.live._catalog_if_changed()
    assert manager.live._available_if_changed(specs) == [] and manager.live._available_if_changed(specs) == []
    assert len(walks) == 1
    sub = manager.settings.models_dir / "org"
    sub.mkdir()
    (sub / "new.gguf").write_bytes(b"GGUF")
    assert manager.live._files_changed()
    assert manager.live._available_if_changed(specs) == ["org/new.gguf"] and len(walks) == 2
    (sub / "other.gguf").write_bytes(b"GGUF")  # in a subdirectory: its own mtime tells
    assert manager.live._available_if_changed(specs) == ["org/new.gguf", "org/other.gguf"] and len(walks) == 3


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
