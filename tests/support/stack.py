"""The real compose stack, run the way `make` runs it (scripts/compose.sh), under a
test project name with its own config/, models/ and logs/, so a developer's own
stack and files are never touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from .net import free_port

REPO = Path(__file__).resolve().parents[2]
LOCAL_LLAMA_IMAGE = "llamadock/llama-server:local-cpu"


def docker_ready() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0 and \
        subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def require_docker() -> None:
    """Skip the calling test module without Docker, unless CI says Docker must be there."""
    import pytest

    if not docker_ready():
        if os.environ.get("LLAMADOCK_REQUIRE_DOCKER"):
            raise RuntimeError("LLAMADOCK_REQUIRE_DOCKER is set but no Docker engine with Compose v2 answers")
        pytest.skip("no Docker engine with Compose v2 here (scripts/setup-docker.sh installs one)",
                    allow_module_level=True)


def local_llama_image() -> str:
    """A CPU llama-server image built from the cached host binary (scripts/make-llama-image.sh)."""
    out = subprocess.run(["bash", "scripts/make-llama-image.sh"], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"make-llama-image.sh failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def app_image() -> str:
    """The app image built from this checkout as `make up` builds it, under LLAMADOCK_APP_IMAGE
    (default llamadock/app:dev): what the orchestrator runs, and the swarm's node agent with it."""
    image = os.environ.get("LLAMADOCK_APP_IMAGE", "llamadock/app:dev")
    base = os.environ.get("LLAMADOCK_PYTHON_IMAGE", "python:3.11-slim-bookworm")
    out = subprocess.run(["docker", "build", "-q", "-f", "docker/app.Dockerfile", "-t", image,
                          "--build-arg", f"PYTHON_IMAGE={base}", "."], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"building {image} failed:\n{out.stderr[-3000:]}")
    return image


class Stack:
    def __init__(self, root: Path, *, llama_image: str | None = None, env: dict[str, str] | None = None,
                 repo: Path = REPO) -> None:
        self.repo = repo  # the checkout whose compose.yaml and scripts run it (a benchmark may compare two)
        self.project = f"llamadock-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = uuid.uuid4().hex
        self.config = root / "config"
        self.models = root / "models"
        self.logs = root / "logs"
        for d in (self.config, self.models, self.logs):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o777)  # the services run as the invoking user; keep it simple for any uid
        # No models.yaml: `make up` creates it from config/models.example.yaml, as for a user.
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LLAMADOCK_")},
            "COMPOSE_PROJECT_NAME": self.project,
            "LLAMADOCK_PORT": str(self.port),
            "LLAMADOCK_CONFIG_DIR": str(self.config),
            "LLAMADOCK_MODELS_DIR": str(self.models),
            "LLAMADOCK_LOGS_DIR": str(self.logs),
            "LLAMADOCK_ADMIN_TOKEN": self.token,
            "LLAMADOCK_GPU": "none",
            **({"LLAMADOCK_LLAMA_IMAGE_CPU": llama_image} if llama_image else {}),
            # Kept: a checkout testing beside another builds its own app image.
            **{k: os.environ[k] for k in ("LLAMADOCK_APP_IMAGE", "LLAMADOCK_NETWORK") if k in os.environ},
            **(env or {}),
        }
        self.admin = httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {self.token}"},
                                  timeout=httpx.Timeout(300, connect=5))

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        out = subprocess.run(list(args), cwd=self.repo, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
                                 f"{out.stderr[-3000:]}\n{self.compose('logs', '--tail', '60', check=False).stdout}")
        return out

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(["bash", "scripts/compose.sh", *args], cwd=self.repo, env=self.env, capture_output=True,
                             text=True, timeout=600)
        if check and out.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed:\n{out.stderr[-3000:]}")
        return out

    def model_containers(self) -> list[dict]:
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.llamadock.project={self.project}"],
                             capture_output=True, text=True, check=True).stdout.split()
        if not ids:
            return []
        return json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                                         check=True).stdout)

    def leftovers(self) -> list[str]:
        found = []
        for label in (f"com.docker.compose.project={self.project}", f"io.llamadock.project={self.project}"):
            for kind in (["ps", "-aq"], ["network", "ls", "-q"], ["volume", "ls", "-q"]):
                out = subprocess.run(["docker", *kind, "--filter", f"label={label}"], capture_output=True,
                                     text=True).stdout
                found += out.split()
        return found

    def force_down(self) -> None:
        """Teardown that cannot fail: every container of this test project, then the project.
        The orchestrator is stopped first, as `make down` does: else a start it was carrying out
        could create a model container after they were removed, and it would be left behind."""
        self.compose("stop", "orchestrator", check=False)
        self._remove_model_containers()
        self.compose("--profile", "cli", "down", "--remove-orphans", "--volumes", "--timeout", "5", check=False)
        self._remove_model_containers()
        self.admin.close()

    def _remove_model_containers(self) -> None:
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.llamadock.project={self.project}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


@contextmanager
def running_stack(root: Path, gguf: Path, *, as_file: str, catalog: dict | None = None, add: dict | None = None,
                  env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A stack up with `make up` and the local llama image: ``gguf`` copied into its models/ as
    ``as_file``, ``catalog`` (the `models:` mapping) written first, or ``add`` posted to the admin
    API once it is up. Torn down whatever happens."""
    stack = Stack(root, llama_image=local_llama_image(), env=env)
    shutil.copy(gguf, stack.models / as_file)
    if catalog is not None:
        import yaml

        (stack.config / "models.yaml").write_text(yaml.safe_dump({"models": catalog}))
    try:
        stack.run("make", "up")
        if add is not None:
            stack.admin.post("/admin/models", json=add).raise_for_status()
        yield stack
    finally:
        stack.force_down()
