"""The gateway in its container, started with compose as `make up` does (real Docker engine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from support.gateway import write_upstreams
from support.net import free_port

REPO = Path(__file__).resolve().parents[2]


def docker_ready() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0 and \
        subprocess.run(["docker", "info"], capture_output=True).returncode == 0


if not docker_ready():
    if os.environ.get("LLAMADOCK_REQUIRE_DOCKER"):
        raise RuntimeError("LLAMADOCK_REQUIRE_DOCKER is set but no Docker engine with Compose v2 answers")
    pytest.skip("no Docker engine with Compose v2 here (scripts/setup-docker.sh installs one)",
                allow_module_level=True)

pytestmark = pytest.mark.docker


def compose(project: str, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "compose", "-p", project, "-f", "compose.yaml", *args], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True, check=check)


def project_leftovers(project: str) -> list[str]:
    label = f"label=com.docker.compose.project={project}"
    found = []
    for kind in (["ps", "-aq"], ["network", "ls", "-q"], ["volume", "ls", "-q"]):
        out = subprocess.run(["docker", *kind, "--filter", label], capture_output=True, text=True).stdout
        found += out.split()
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    project = f"llamadock-test-{uuid.uuid4().hex[:8]}"
    config = tmp_path_factory.mktemp("config")
    write_upstreams(config / "upstreams.yaml", {
        # Nothing listens there inside the container: a declared model that is down.
        "ghost": {"url": "http://127.0.0.1:9", "aliases": ["llamacpp:ghost"]},
    })
    config.chmod(0o755)
    (config / "upstreams.yaml").chmod(0o644)
    port = free_port()
    env = {"LLAMADOCK_PORT": str(port), "LLAMADOCK_CONFIG_DIR": str(config), "LLAMADOCK_GPU": "none"}
    try:
        up = compose(project, env, "up", "-d", "--build", "--wait", "--wait-timeout", "180", check=False)
        if up.returncode != 0:
            logs = compose(project, env, "logs", check=False).stdout
            pytest.fail(f"compose up failed:\n{up.stderr[-3000:]}\n{logs[-3000:]}")
        yield f"http://127.0.0.1:{port}", project, env
    finally:
        compose(project, env, "down", "--remove-orphans", "--volumes", "--timeout", "5", check=False)


def test_gateway_container_is_healthy_and_published_on_loopback_only(stack):
    url, project, env = stack
    assert httpx.get(url + "/health", timeout=10).json() == {"status": "ok"}
    ports = json.loads(subprocess.run(
        ["docker", "inspect", "--format", "{{json .NetworkSettings.Ports}}", f"{project}-gateway-1"],
        capture_output=True, text=True, check=True).stdout)
    assert {binding["HostIp"] for binding in ports["8080/tcp"]} == {"127.0.0.1"}


def test_gateway_container_serves_the_api(stack):
    url, _, _ = stack
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    (ghost,) = client.models.list().data
    assert ghost.id == "ghost" and ghost.state == "stopped"
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="llamacpp:ghost", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 503 and raised.value.body["code"] == "model_not_ready"
    gpu = httpx.get(url + "/gpu", timeout=10).json()
    assert gpu["available"] is False and gpu["reason"]
    assert httpx.get(url + "/docs", timeout=10).status_code == 200


def test_make_up_then_make_down_leaves_nothing_behind(tmp_path):
    """The two commands a user runs, as they run them (a test project name keeps a real stack safe)."""
    project = f"llamadock-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    tmp_path.chmod(0o755)
    env = {**os.environ, "COMPOSE_PROJECT_NAME": project, "LLAMADOCK_PORT": str(port),
           "LLAMADOCK_CONFIG_DIR": str(tmp_path), "LLAMADOCK_GPU": "none"}
    try:
        up = subprocess.run(["make", "up"], cwd=REPO, env=env, capture_output=True, text=True)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        assert f"http://127.0.0.1:{port}/docs" in up.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        assert project_leftovers(project)
    finally:
        down = subprocess.run(["make", "down"], cwd=REPO, env=env, capture_output=True, text=True)
    assert down.returncode == 0, down.stderr[-2000:]
    assert project_leftovers(project) == []
