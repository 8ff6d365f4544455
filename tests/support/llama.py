"""Real llama-server processes for integration tests.

    binary = ensure_llama_server()                      # builds once, cached
    model = make_tiny_model(tmp / "a.gguf", name="tiny-a", seed=1)
    with LlamaServer(binary, model) as srv:             # started, /health == 200
        httpx.get(srv.url + "/v1/models")
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import signal
import subprocess
import tempfile
import weakref
from pathlib import Path
from types import ModuleType
from typing import Sequence

import httpx

from .net import free_port
from .waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-llama-server.sh"
TINY_GGUF_SCRIPT = REPO_ROOT / "scripts" / "make_tiny_gguf.py"
VOCAB_NAME = "ggml-vocab-llama-spm.gguf"

_BIND_ERRORS = ("couldn't bind", "address already in use", "failed to bind")


def ensure_llama_server(timeout: float = 3600) -> Path:
    """Build (or find cached) llama-server via scripts/build-llama-server.sh; return its path.

    The script holds a flock, so concurrent callers build once; when the
    binary is cached it returns at once.  Build output goes to our stderr.
    """
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=True,
    )
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError(f"{BUILD_SCRIPT} printed no binary path")
    binary = Path(lines[-1])
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"{BUILD_SCRIPT} printed {binary}, which is not executable")
    return binary


def vocab_path(binary: Path) -> Path:
    """The llama-spm tokenizer GGUF that the build script caches next to ``binary``."""
    return Path(binary).resolve().parent.parent / "vocab" / VOCAB_NAME


@functools.lru_cache(maxsize=1)
def _tiny_gguf_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_llamadock_make_tiny_gguf", TINY_GGUF_SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_tiny_model(path: Path, *, name: str, seed: int, vocab: Path, **shape: int) -> Path:
    """scripts/make_tiny_gguf.py's ``write_tiny_model`` (the script is not a package); ``shape``:
    its n_embd, n_layers, n_head, n_head_kv, n_ff for a bigger model than the test one."""
    return _tiny_gguf_module().write_tiny_model(Path(path), name=name, seed=seed, vocab=Path(vocab), **shape)


def _reap(proc: subprocess.Popen) -> None:
    # finalizer: never leave a llama-server behind if a test forgets stop()
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class LlamaServerError(RuntimeError):
    pass


class LlamaServer:
    """One llama-server process bound to 127.0.0.1.

    ``ctx`` is the *total* KV size; llama-server gives each of the
    ``parallel`` slots ctx/parallel tokens (capped at the model's trained
    context, 32768 for the tiny models).  The defaults (2048 / 2) give each
    slot 1024 tokens: a short chat prompt plus 400+ generated ones fit.

    Note: llama-server closes the TCP connection after every *streamed*
    response although it advertises keep-alive; clients reusing that
    connection may see "Server disconnected without sending a response".
    """

    def __init__(
        self,
        binary: Path,
        model: Path,
        *,
        port: int | None = None,
        parallel: int = 2,
        ctx: int = 2048,
        threads: int = 1,
        extra_args: Sequence[str] = (),
        alias: str | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.binary = Path(binary)
        self.model = Path(model)
        self._fixed_port = port
        self.port = port if port is not None else free_port()
        self.parallel = parallel
        self.ctx = ctx
        self.threads = threads
        self.extra_args = tuple(extra_args)
        self.alias = alias
        self._log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="llama-server-"))
        self.log_path = self._log_dir / f"llama-server-{self.model.stem}-{os.getpid()}-{id(self):x}.log"
        self.proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None

    # -- properties -------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = [
            str(self.binary),
            "--model", str(self.model),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--parallel", str(self.parallel),
            "--ctx-size", str(self.ctx),
            "--threads", str(self.threads),
            "--threads-batch", str(self.threads),
        ]
        if self.alias:
            cmd += ["--alias", self.alias]
        cmd += list(self.extra_args)
        return cmd

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    # -- lifecycle --------------------------------------------------------
    def start(self, timeout: float = 60) -> "LlamaServer":
        """Launch and wait until GET /health answers 200; raise with the log tail otherwise."""
        if self.running:
            return self
        attempts = 1 if self._fixed_port is not None else 3
        for attempt in range(attempts):
            offset = len(self.log_text())
            try:
                return self._start_once(timeout)
            except LlamaServerError:
                this_try = self.log_text()[offset:].lower()
                bind_failed = any(s in this_try for s in _BIND_ERRORS)
                if not bind_failed or attempt == attempts - 1:
                    raise
                self.port = free_port()  # lost the free_port race: try another
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> "LlamaServer":
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # no terminal signals from the test runner's tty
            )
        self._finalizer = weakref.finalize(self, _reap, self.proc)
        proc = self.proc
        health = self.url + "/health"
        state = {"status": None}

        with httpx.Client(timeout=httpx.Timeout(1.0, connect=0.5), trust_env=False) as client:
            def ready() -> bool:
                if proc.poll() is not None:
                    return True  # stop polling; reported below
                try:
                    state["status"] = client.get(health).status_code
                except httpx.TransportError:
                    return False
                return state["status"] == 200

            with contextlib.suppress(AssertionError):  # not healthy in time: reported below, with the log
                wait_until(ready, timeout, "llama-server's /health", every=0.02)

        if proc.poll() is not None:
            rc = proc.returncode
            raise LlamaServerError(
                f"llama-server exited early (rc={rc}) on port {self.port}:\n"
                f"$ {' '.join(self.command())}\n{self._log_tail()}"
            )
        if state["status"] != 200:
            self.kill()
            raise LlamaServerError(
                f"llama-server not healthy after {timeout}s (last /health: {state['status']}) "
                f"on port {self.port}:\n{self._log_tail()}"
            )
        return self

    def stop(self, timeout: float = 5) -> None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL and wait (simulates a crash)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait()

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LlamaServer {self.model.name} {self.url} pid={self.pid} {state}>"
