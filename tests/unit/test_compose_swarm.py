"""`make up`'s compose files in swarm mode (scripts/compose-files.sh, docker/compose.swarm.yaml):
the override is chosen by LLAMADOCK_BACKEND, the gateway's host-network mode is left out (a
host-network container cannot join an overlay) or refused when asked for, and the merged model
attaches the gateway and the orchestrator to the external overlay. The real docker CLI, pointed
at no daemon: the script must decide without one, and `compose config` needs none."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI (no daemon)")


def compose_files(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "scripts" / "compose-files.sh")], capture_output=True, text=True,
                          timeout=30, env=os.environ | {"DOCKER_HOST": "unix:///nonexistent.sock",
                                                        "LLAMADOCK_GPU": "none"} | env)


@pytest.mark.parametrize("network", ["auto", "bridge"])
def test_swarm_mode_adds_the_overlay_file_and_keeps_the_gateway_on_the_bridge(network):
    out = compose_files(LLAMADOCK_BACKEND="swarm", LLAMADOCK_NETWORK=network)
    assert out.returncode == 0, out.stderr
    assert "-f docker/compose.swarm.yaml" in out.stdout
    assert "compose.hostnet.yaml" not in out.stdout


def test_engine_mode_is_unchanged():
    out = compose_files(LLAMADOCK_BACKEND="engine", LLAMADOCK_NETWORK="host")
    assert out.returncode == 0, out.stderr
    assert "compose.swarm.yaml" not in out.stdout and "-f docker/compose.hostnet.yaml" in out.stdout


def test_host_network_with_swarm_is_refused_saying_why():
    out = compose_files(LLAMADOCK_BACKEND="swarm", LLAMADOCK_NETWORK="host")
    assert out.returncode == 2 and out.stdout == ""
    assert "cannot join the overlay" in out.stderr


def test_an_unknown_backend_is_refused():
    out = compose_files(LLAMADOCK_BACKEND="kubernetes")
    assert out.returncode == 2 and "engine or swarm" in out.stderr


def test_the_merged_stack_puts_gateway_and_orchestrator_on_the_external_overlay(tmp_path):
    env = os.environ | {"DOCKER_HOST": "unix:///nonexistent.sock", "LLAMADOCK_SWARM_NETWORK": "ld-overlay"}
    out = subprocess.run(["docker", "compose", "--project-directory", str(REPO), "-f", str(REPO / "compose.yaml"),
                          "-f", str(REPO / "docker" / "compose.swarm.yaml"), "config", "--format", "json"],
                         capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    model = json.loads(out.stdout)
    assert (model["networks"]["swarm"]["name"], model["networks"]["swarm"]["external"]) == ("ld-overlay", True)
    for service in ("gateway", "orchestrator"):
        assert set(model["services"][service]["networks"]) == {"default", "swarm"}, service
    assert model["services"]["orchestrator"]["environment"]["LLAMADOCK_BACKEND"] == "swarm"
    assert model["services"]["orchestrator"]["environment"]["LLAMADOCK_SWARM_NETWORK"] == "ld-overlay"
    # The gateway's port stays published on loopback (no host network here).
    assert [(p["host_ip"], p["target"]) for p in model["services"]["gateway"]["ports"]] == [("127.0.0.1", 8080)]
    assert "network_mode" not in model["services"]["gateway"]


@pytest.mark.parametrize("backend", ["engine", "swarm"])
def test_the_default_paths_make_a_valid_stack(backend):
    """No models or KV cache directory set: the KV cache's default is a relative path, which compose
    would take for a named volume without its ./ ("refers to undefined volume")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMADOCK_")} | {
        "DOCKER_HOST": "unix:///nonexistent.sock", "LLAMADOCK_ADMIN_TOKEN": "t", "LLAMADOCK_GPU": "none",
        "LLAMADOCK_BACKEND": backend}
    out = subprocess.run(["bash", str(REPO / "scripts" / "compose.sh"), "config", "--format", "json"],
                         capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    mounts = {v["target"]: v for v in json.loads(out.stdout)["services"]["orchestrator"]["volumes"]}
    assert mounts["/kv"]["type"] == "bind" and mounts["/kv"]["source"] == str(REPO / "models" / ".cache" / "kv")
