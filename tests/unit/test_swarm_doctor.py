"""`make swarm-doctor`'s checker (scripts/swarm_doctor.py, pure ``check``) over sample daemon.json,
NVIDIA runtime configs and nvidia-smi outputs: what it calls ready, and exactly what it says to change."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("swarm_doctor",
                                               Path(__file__).parents[2] / "scripts" / "swarm_doctor.py")
doctor = importlib.util.module_from_spec(_spec)
sys.modules["swarm_doctor"] = doctor  # its dataclasses look their module up
_spec.loader.exec_module(doctor)

GPUS = "GPU 0: NVIDIA GeForce RTX 4090 (UUID: GPU-1111)\nGPU 1: NVIDIA GeForce RTX 3060 (UUID: GPU-2222)\n"
READY_JSON = json.dumps({"default-runtime": "nvidia",
                         "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}})
# What `nvidia-ctk runtime configure --runtime=docker` writes without --set-as-default.
REGISTERED_ONLY = json.dumps({"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
                              "log-driver": "local"})
TOOLKIT_DEFAULT = '''#accept-nvidia-visible-devices-as-volume-mounts = false
#accept-nvidia-visible-devices-envvar-when-unprivileged = true
[nvidia-container-runtime]
mode = "auto"
'''


def fixes(report) -> list[str]:
    return [f.what for f in report.findings if not f.ok]


@pytest.mark.parametrize("daemon, config", [
    (READY_JSON, TOOLKIT_DEFAULT),
    (READY_JSON, None),  # no config file: the toolkit's defaults
    (READY_JSON, 'accept-nvidia-visible-devices-envvar-when-unprivileged = true\n'),
])
def test_a_ready_gpu_node(daemon, config):
    report = doctor.check(daemon, config, GPUS)
    assert report.ready and report.gpu, fixes(report)
    assert report.daemon_json is None
    assert "2 GPU(s)" in doctor.render(report) and "can run llamadock's models on its GPU" in doctor.render(report)


@pytest.mark.parametrize("daemon, wrong", [
    (None, ["not registered", "not 'nvidia'"]),  # no daemon.json at all
    ("", ["not registered", "not 'nvidia'"]),
    (REGISTERED_ONLY, ["default runtime is 'runc'"]),
    (json.dumps({"default-runtime": "runc", "runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime"}}}),
     ["default runtime is 'runc'"]),
])
def test_daemon_json_gets_the_nvidia_default_runtime_and_keeps_the_rest(daemon, wrong):
    report = doctor.check(daemon, TOOLKIT_DEFAULT, GPUS)
    assert not report.ready
    [problem] = fixes(report)
    for words in wrong:
        assert words in problem
    fixed = json.loads(report.daemon_json)
    assert fixed["default-runtime"] == "nvidia" and "nvidia" in fixed["runtimes"]
    before = json.loads(daemon) if daemon else {}
    for key, value in before.items():
        if key not in ("default-runtime", "runtimes"):
            assert fixed[key] == value  # e.g. log-driver: kept
    if "runtimes" in before:  # a path already given is kept
        assert fixed["runtimes"]["nvidia"]["path"] == before["runtimes"]["nvidia"]["path"]
    # The change is spelled out: the whole file, and the restart.
    change = next(f.change for f in report.findings if not f.ok)
    assert report.daemon_json in change and "systemctl restart docker" in change


def test_broken_daemon_json_is_named_not_rewritten():
    report = doctor.check('{"default-runtime": "nvidia",', TOOLKIT_DEFAULT, GPUS)
    assert report.daemon_json is None
    assert any("is not valid JSON" in f for f in fixes(report))


def test_the_runtime_ignoring_the_envvar_is_a_fix():
    report = doctor.check(READY_JSON, "accept-nvidia-visible-devices-envvar-when-unprivileged = false\n", GPUS)
    [problem] = fixes(report)
    assert "ignores NVIDIA_VISIBLE_DEVICES" in problem
    assert "nvidia-ctk config --in-place --set accept-nvidia-visible-devices-envvar-when-unprivileged=true" in \
        next(f.change for f in report.findings if not f.ok)


def test_generic_resources_set_up_is_harmless():
    daemon = json.loads(READY_JSON) | {"node-generic-resources": ["NVIDIA-GPU=GPU-1111"]}
    report = doctor.check(json.dumps(daemon), '[nvidia-container-runtime]\nswarm-resource = "DOCKER_RESOURCE_GPU"\n',
                          GPUS)
    assert report.ready
    assert any("swarm-resource" in f.what for f in report.findings)


def test_a_missing_runtime_binary_or_bad_toml():
    assert any("not on PATH" in f for f in fixes(doctor.check(READY_JSON, None, GPUS, runtime_binary_found=False)))
    assert any("not valid TOML" in f for f in fixes(doctor.check(READY_JSON, "mode = = x", GPUS)))


@pytest.mark.parametrize("smi", [None, "", "NVIDIA-SMI has failed because it couldn't communicate with the driver"])
def test_a_node_without_a_gpu_is_told_it_runs_on_the_cpu(smi):
    report = doctor.check(None, None, smi)
    assert not report.gpu and len(report.findings) == 1  # no daemon.json advice for a CPU node
    assert "llamadock.memory_mb" in report.findings[0].change
    assert "CPU only" in doctor.render(report)
