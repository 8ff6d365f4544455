"""Shared fixtures: a real llama-server binary, two tiny GGUF models, running upstreams.

Kept free of gateway imports so it works whatever state gateway/ is in.

    llama_server_bin  session  Path to llama-server (built once, cached)
    tiny_models       session  {"tiny-a": Path, "tiny-b": Path}
    upstreams         session  {"tiny-a": LlamaServer, "tiny-b": LlamaServer}, running
    spawn_llama       function spawn_llama("tiny-a", parallel=1, ...) -> started LlamaServer,
                               stopped at the test's teardown

Upstreams are shared by the whole session: tests that kill, stop or overload a
llama-server should spawn their own with ``spawn_llama``.  Each server's model id
(/v1/models, "model" in responses) is its alias, i.e. the model name.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # `support` importable whether or not tests/ is a package
    sys.path.insert(0, _TESTS_DIR)

from support.llama import LlamaServer, ensure_llama_server, make_tiny_model, vocab_path  # noqa: E402

TINY_SEEDS = {"tiny-a": 1, "tiny-b": 2}


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    return ensure_llama_server()


@pytest.fixture(scope="session")
def tiny_models(llama_server_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    vocab = vocab_path(llama_server_bin)
    return {
        name: make_tiny_model(root / f"{name}.gguf", name=name, seed=seed, vocab=vocab)
        for name, seed in TINY_SEEDS.items()
    }


@pytest.fixture(scope="session")
def upstreams(
    llama_server_bin: Path, tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LlamaServer]]:
    logs = tmp_path_factory.mktemp("upstream-logs")
    servers = {
        name: LlamaServer(llama_server_bin, path, alias=name, log_dir=logs)
        for name, path in tiny_models.items()
    }
    try:
        for srv in servers.values():
            srv.start()
        yield servers
    finally:
        for srv in servers.values():
            srv.stop()


@pytest.fixture
def spawn_llama(
    llama_server_bin: Path, tiny_models: dict[str, Path], tmp_path: Path
) -> Iterator[Callable[..., LlamaServer]]:
    spawned: list[LlamaServer] = []

    def spawn(model_name: str, *, timeout: float = 60, **kwargs) -> LlamaServer:
        kwargs.setdefault("alias", model_name)
        kwargs.setdefault("log_dir", tmp_path)
        srv = LlamaServer(llama_server_bin, tiny_models[model_name], **kwargs)
        spawned.append(srv)
        return srv.start(timeout=timeout)

    yield spawn
    for srv in spawned:
        srv.stop()
