"""The listing's ``kv_key``: the key of the server that runs (its own spec) while it runs, the
declared spec's once it is stopped (the next start recreates a container of another spec), and a
new one when the GGUF file is replaced. On the in-memory runtime."""

from __future__ import annotations

import asyncio
import os

from orchestrator.backends.memory import MemoryRuntime
from orchestrator.manager import ModelManager
from orchestrator.settings import OrchestratorSettings

CATALOG = "models:\n  a:\n    model: a.gguf\n    ctx_size: {ctx}\n"


def test_the_key_follows_what_runs_then_what_is_declared_then_the_file(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "a.gguf").write_bytes(b"GGUF")
    catalog = tmp_path / "models.yaml"
    catalog.write_text(CATALOG.format(ctx=4096))
    manager = ModelManager(MemoryRuntime(), OrchestratorSettings(admin_token="t", catalog_file=catalog,
                                                                 models_dir=tmp_path / "models"))

    async def key() -> str:
        return (await manager.refresh()).find("a").kv_key

    async def scenario():
        stopped = await key()
        assert stopped and (await manager.start("a")).kv_key == stopped
        catalog.write_text(CATALOG.format(ctx=2048))
        os.utime(catalog, (1, 1))
        assert await key() == stopped  # it still runs with 4096: its slots are saved under that key
        await manager.stop("a")
        changed = await key()
        assert changed != stopped  # the next start runs 2048
        os.utime(tmp_path / "models" / "a.gguf", (5, 5))
        assert await key() not in (stopped, changed)
    asyncio.run(asyncio.wait_for(scenario(), 10))
