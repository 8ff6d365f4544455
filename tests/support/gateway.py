"""Run the real gateway (``python -m gateway``) as a process, as users do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from .net import free_port


def write_upstreams(path: Path, models: dict[str, dict]) -> Path:
    """Write a static registry file atomically (the gateway may be reading it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"models": models}))
    tmp.replace(path)
    return path


class GatewayProcess:
    def __init__(self, upstreams_file: Path, *, api_keys: str = "", env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstreams_file = upstreams_file
        self._workdir = Path(tempfile.mkdtemp(prefix="llamadock-gw-"))
        self.log_path = self._workdir / "gateway.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LLAMADOCK_")},
            "LLAMADOCK_HOST": "127.0.0.1",
            "LLAMADOCK_PORT": str(self.port),
            "LLAMADOCK_UPSTREAMS_FILE": str(upstreams_file),
            "LLAMADOCK_API_KEYS": api_keys,
            "LLAMADOCK_HEALTH_INTERVAL_S": "0.2",
            "LLAMADOCK_LOG_LEVEL": "warning",
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> "GatewayProcess":
        log = self.log_path.open("wb")
        # cwd outside the repo so a developer's .env cannot change what is tested.
        self.process = subprocess.Popen([sys.executable, "-m", "gateway"], env=self.env, cwd=self._workdir,
                                        stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"gateway not healthy in {timeout} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "GatewayProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
