"""Spec + host facts -> Docker SDK create arguments, for each kind of host (pure)."""

from __future__ import annotations

import json

import docker.types
import pydantic
import pytest

from orchestrator.backends.docker.containers import (LABEL_HASH, LABEL_MODEL, LABEL_PLACEMENT, LABEL_PROJECT, StackFacts,
                                     create_kwargs, server_command)
from orchestrator.backends.docker.host import HostFacts, detect_host
from contract.placement import Placement
from contract.spec import ModelSpec

STACK = StackFacts(project="llamadock", network="llamadock_default", models_dir="/home/u/llamadock/models",
                   cache_dir="/home/u/llamadock/models/.cache", cpu_image="llama:cpu", gpu_image="llama:cuda",
                   user="1000:1000")
NATIVE = HostFacts(gpu=True, gpu_driver="nvidia")
WSL2 = HostFacts(gpu=True, gpu_driver="nvidia", wsl2=True)
CPU = HostFacts(gpu=False)
SPEC = ModelSpec(name="qwen", model="qwen.gguf", ctx_size=8192, parallel=2, aliases=("gpt-4o-mini",))


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


@pytest.mark.parametrize("host", [NATIVE, WSL2, CPU], ids=["native", "wsl2", "cpu"])
def test_common_shape(host):
    kw = create_kwargs(SPEC, host, STACK)
    assert kw["name"] == "llamadock-model-qwen"
    assert kw["network"] == "llamadock_default"
    assert "ports" not in kw and "publish_all_ports" not in kw  # reachable on the stack's network only
    assert kw["privileged"] is False
    assert kw["restart_policy"]["Name"] == "on-failure"
    assert kw["log_config"] == {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}}
    assert kw["healthcheck"]["test"][-1] == "http://127.0.0.1:8080/health"
    models = next(m for m in kw["mounts"] if m["Target"] == "/models")
    assert models == {"Type": "bind", "Source": STACK.models_dir, "Target": "/models", "ReadOnly": True}
    assert kw["labels"][LABEL_PROJECT] == "llamadock" and kw["labels"][LABEL_MODEL] == "qwen"
    assert kw["user"] == "1000:1000"
    cmd = kw["command"]
    assert flag(cmd, "--model") == "/models/qwen.gguf"
    assert flag(cmd, "--alias") == "qwen"
    assert (flag(cmd, "--ctx-size"), flag(cmd, "--parallel"), flag(cmd, "--port")) == ("8192", "2", "8080")
    # The Docker SDK accepts these arguments as they are.
    docker.types.HostConfig(version="1.41", mounts=kw["mounts"], device_requests=kw["device_requests"],
                            log_config=kw["log_config"], restart_policy=kw["restart_policy"],
                            devices=kw["devices"])
    docker.types.Healthcheck(**kw["healthcheck"])


def test_native_linux_gpu():
    kw = create_kwargs(SPEC, NATIVE, STACK)
    assert kw["image"] == "llama:cuda"
    assert kw["device_requests"] == [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu", "compute", "utility"]]}]
    assert kw["devices"] == []
    assert not any(m["Target"] == "/usr/lib/wsl" for m in kw["mounts"])
    assert "LD_LIBRARY_PATH" not in kw["environment"]
    assert flag(kw["command"], "--n-gpu-layers") == "999"


def test_wsl2_gpu_adds_dxg_and_wsl_libraries():
    kw = create_kwargs(SPEC, WSL2, STACK)
    assert kw["device_requests"][0]["Driver"] == "nvidia"
    assert kw["devices"] == ["/dev/dxg:/dev/dxg:rwm"]
    assert {"Type": "bind", "Source": "/usr/lib/wsl", "Target": "/usr/lib/wsl", "ReadOnly": True} in kw["mounts"]
    assert kw["environment"]["LD_LIBRARY_PATH"] == "/usr/lib/wsl/lib"


def test_docker_desktop_wsl2_needs_no_manual_passthrough():
    kw = create_kwargs(SPEC, HostFacts(gpu=True, gpu_driver="nvidia", wsl2=True, docker_desktop=True), STACK)
    assert kw["devices"] == [] and "LD_LIBRARY_PATH" not in kw["environment"]
    assert kw["device_requests"]


def test_cpu_host_has_no_gpu_flags():
    kw = create_kwargs(SPEC, CPU, STACK)
    assert kw["image"] == "llama:cpu"
    assert kw["device_requests"] == [] and kw["devices"] == []
    assert flag(kw["command"], "--n-gpu-layers") == "0"


def test_gpu_selection_and_cdi():
    picked = ModelSpec(name="q", model="q.gguf", gpus=(1,), gpu_layers=20)
    kw = create_kwargs(picked, NATIVE, STACK)
    assert kw["device_requests"][0]["DeviceIDs"] == ["1"] and "Count" not in kw["device_requests"][0]
    assert flag(kw["command"], "--n-gpu-layers") == "20"
    cdi = create_kwargs(picked, HostFacts(gpu=True, gpu_driver="cdi"), STACK)
    assert cdi["device_requests"] == [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=1"]}]


def test_hf_source_mmproj_and_extra_args():
    s = ModelSpec(name="v", hf="ggml-org/gemma-3-4b-it-GGUF:Q4_K_M", mmproj="proj.gguf", args=("--jinja",))
    cmd = server_command(s, CPU)
    assert flag(cmd, "--hf-repo") == "ggml-org/gemma-3-4b-it-GGUF:Q4_K_M" and "--model" not in cmd
    assert flag(cmd, "--mmproj") == "/models/proj.gguf"
    assert cmd[-1] == "--jinja"
    kw = create_kwargs(s, CPU, STACK)
    cache = next(m for m in kw["mounts"] if m["Target"] == "/cache")
    assert cache["Source"] == STACK.cache_dir and cache["ReadOnly"] is False
    assert kw["environment"]["LLAMA_CACHE"] == "/cache"


def test_hash_changes_with_anything_that_shapes_the_container():
    base = create_kwargs(SPEC, CPU, STACK)["labels"][LABEL_HASH]
    assert create_kwargs(SPEC, CPU, STACK)["labels"][LABEL_HASH] == base
    assert create_kwargs(SPEC.model_copy(update={"ctx_size": 1024}), CPU, STACK)["labels"][LABEL_HASH] != base
    assert create_kwargs(SPEC, NATIVE, STACK)["labels"][LABEL_HASH] != base
    other_image = StackFacts(**{**STACK.__dict__, "cpu_image": "llama:other"})
    assert create_kwargs(SPEC, CPU, other_image)["labels"][LABEL_HASH] != base


# ---- detection from `docker info` ------------------------------------------------------------

LINUX_INFO = {"KernelVersion": "6.8.0-45-generic", "OperatingSystem": "Ubuntu 24.04.1 LTS",
              "Runtimes": {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}}
WSL_INFO = {"KernelVersion": "5.15.167.4-microsoft-standard-WSL2", "OperatingSystem": "Ubuntu 22.04.5 LTS",
            "Runtimes": {"runc": {}, "nvidia": {}}}


def test_detect_native_nvidia():
    facts = detect_host(LINUX_INFO)
    assert (facts.gpu, facts.gpu_driver, facts.wsl2, facts.kind) == (True, "nvidia", False, "nvidia")


def test_detect_wsl2_engine():
    facts = detect_host(WSL_INFO)
    assert (facts.gpu, facts.wsl2, facts.docker_desktop, facts.kind) == (True, True, False, "wsl2-nvidia")


def test_detect_docker_desktop_on_wsl2():
    facts = detect_host({"KernelVersion": "5.15.153.1-microsoft-standard-WSL2", "OperatingSystem": "Docker Desktop",
                         "Runtimes": {"runc": {}}})
    assert facts.gpu and facts.wsl2 and facts.docker_desktop


def test_detect_cdi_only():
    info = {"KernelVersion": "6.8.0", "Runtimes": {"runc": {}},
            "DiscoveredDevices": [{"Source": "cdi", "ID": "nvidia.com/gpu=all"}]}
    assert detect_host(info).gpu_driver == "cdi"


def test_no_gpu_is_a_warning_not_a_failure():
    facts = detect_host({"KernelVersion": "6.1.0-26-amd64", "Runtimes": {"runc": {}}})
    assert not facts.gpu and facts.kind == "cpu"
    assert "CPU" in facts.warnings[0] and "NVIDIA Container Toolkit" in facts.warnings[0]
    wsl = detect_host({**WSL_INFO, "Runtimes": {"runc": {}}})
    assert not wsl.gpu and "WSL2" in wsl.warnings[0]


def test_mode_overrides_detection():
    assert not detect_host(LINUX_INFO, "none").gpu
    forced = detect_host({"KernelVersion": "6.1.0", "Runtimes": {}}, "nvidia")
    assert forced.gpu and forced.gpu_driver == "nvidia" and not forced.warnings


# ---- placement (the gateway's scheduler picks the GPUs) --------------------------------------

def test_placement_on_one_gpu_requests_exactly_that_gpu_and_no_split():
    kw = create_kwargs(SPEC, NATIVE, STACK, Placement(gpus=(1,)))
    assert kw["device_requests"] == [{"Driver": "nvidia", "DeviceIDs": ["1"],
                                      "Capabilities": [["gpu", "compute", "utility"]]}]
    assert "--tensor-split" not in kw["command"] and "--split-mode" not in kw["command"]
    assert json.loads(kw["labels"][LABEL_PLACEMENT]) == {"gpus": [1], "tensor_split": None}


def test_split_placement_gives_the_layer_split_in_pci_order():
    kw = create_kwargs(SPEC, NATIVE, STACK, Placement(gpus=(0, 1), tensor_split=(4800, 10560)))
    assert kw["device_requests"][0]["DeviceIDs"] == ["0", "1"]
    assert flag(kw["command"], "--split-mode") == "layer"
    assert flag(kw["command"], "--tensor-split") == "4800,10560"
    assert kw["environment"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    cdi = create_kwargs(SPEC, HostFacts(gpu=True, gpu_driver="cdi"), STACK, Placement(gpus=(0, 1)))
    assert cdi["device_requests"] == [{"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]}]
    assert flag(cdi["command"], "--tensor-split") == "1,1"
    docker.types.HostConfig(version="1.41", device_requests=kw["device_requests"])


def test_placement_is_ignored_without_a_gpu():
    assert create_kwargs(SPEC, CPU, STACK, Placement(gpus=(0, 1))) == create_kwargs(SPEC, CPU, STACK)


def test_the_hash_leaves_placement_out_and_the_label_tells_it():
    """reconcile knows no placement: it must not recreate a placed container; start compares the label."""
    plain = create_kwargs(SPEC, NATIVE, STACK)
    placed = create_kwargs(SPEC, NATIVE, STACK, Placement(gpus=(1,)))
    assert placed["labels"][LABEL_HASH] == plain["labels"][LABEL_HASH]
    assert plain["labels"][LABEL_PLACEMENT] == ""
    assert placed["labels"][LABEL_PLACEMENT] != create_kwargs(SPEC, NATIVE, STACK, Placement(gpus=(0,)))[
        "labels"][LABEL_PLACEMENT]


@pytest.mark.parametrize("body", [{"gpus": [], "tensor_split": [1]}, {"gpus": [0, 0]}, {"gpus": [-1]},
                                  {"gpus": [0, 1], "tensor_split": [1]}, {"gpus": [0], "tensor_split": [0]},
                                  {"gpus": [0], "extra": 1}])
def test_bad_placements_are_refused(body):
    with pytest.raises(pydantic.ValidationError):
        Placement.model_validate(body)


def test_a_placement_without_gpus_is_a_nodes_memory_and_places_nothing_on_one_box():
    on_node = Placement.model_validate({"node": "node2", "gpus": []})
    assert on_node.pools == ("node2/budget",)
    here = Placement(gpus=())
    # The engine's one box: its memory is where every unplaced model runs already.
    assert create_kwargs(SPEC, NATIVE, STACK, here) == create_kwargs(SPEC, NATIVE, STACK)


def test_each_model_saves_its_slots_into_its_own_directory_and_no_other():
    stack = StackFacts(**{**STACK.__dict__, "kv_dir": "/home/u/llamadock/models/.cache/kv"})
    kw = create_kwargs(SPEC, CPU, stack)
    kv = next(m for m in kw["mounts"] if m["Target"] == "/kv")
    assert kv == {"Type": "bind", "Source": "/home/u/llamadock/models/.cache/kv/qwen", "Target": "/kv",
                  "ReadOnly": False}
    assert flag(kw["command"], "--slot-save-path") == "/kv"
    placed = create_kwargs(SPEC, NATIVE, stack, Placement(gpus=(0, 1)))
    assert flag(placed["command"], "--slot-save-path") == "/kv"
    # Without a KV cache root: no mount and no flag (the slot endpoints refuse).
    assert "--slot-save-path" not in create_kwargs(SPEC, CPU, STACK)["command"]
