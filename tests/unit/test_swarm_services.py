"""Spec + placement -> a Swarm service's SDK arguments (pure): the node constraint, the GPU by
NVIDIA_VISIBLE_DEVICES (no device requests in a service), dnsrr, the labels a restart adopts by."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import docker.models.services
import httpx
import pytest

from common.errors import ApiError
from contract.listing import HostInfo, InstanceState
from contract.placement import Placement
from contract.spec import ModelSpec
from orchestrator.backends.runtime import Instance
from orchestrator.backends.swarm.nodes import node_from_attrs
from orchestrator.backends.swarm.runtime import SwarmRuntime
from orchestrator.settings import OrchestratorSettings
from orchestrator.backends.docker.containers import (LABEL_HASH, LABEL_MODEL, LABEL_PLACEMENT, LABEL_PROJECT,
                                                     LABEL_SPEC, StackFacts, spec_hash)
from orchestrator.backends.swarm.services import SwarmFacts, service_kwargs

STACK = StackFacts(project="llamadock", network="llamadock", models_dir="/srv/llamadock/models",
                   cache_dir="/srv/llamadock/models/.cache", cpu_image="llama:cpu", gpu_image="llama:cuda",
                   user="1000:1000")
CPU = SwarmFacts(gpu=False, local_hostname="box1")
GPU = SwarmFacts(gpu=True, local_hostname="box1")
SPEC = ModelSpec(name="qwen", model="qwen.gguf", ctx_size=8192, parallel=2)


def env(kwargs: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in kwargs["env"])


def flag(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


@pytest.mark.parametrize("facts", [CPU, GPU], ids=["cpu", "gpu"])
def test_common_shape(facts):
    kw = service_kwargs(SPEC, facts, STACK, stop_grace_s=7)
    assert kw["name"] == "llamadock-model-qwen"
    assert kw["networks"] == ["llamadock"]
    assert kw["endpoint_spec"] == {"Mode": "dnsrr"}  # no IPVS needed, and no port published
    assert kw["mode"] == {"replicated": {"Replicas": 1}}
    assert kw["update_config"]["Order"] == "stop-first"  # never two tasks holding one model's memory
    assert kw["restart_policy"]["Condition"] == "on-failure"
    assert kw["stop_grace_period"] == 7_000_000_000
    assert [(m["Target"], m["Source"], m["ReadOnly"]) for m in kw["mounts"]] == [
        ("/models", "/srv/llamadock/models", True), ("/cache", "/srv/llamadock/models/.cache", False)]
    assert kw["labels"][LABEL_PROJECT] == "llamadock" and kw["labels"][LABEL_MODEL] == "qwen"
    assert ModelSpec.model_validate(json.loads(kw["labels"][LABEL_SPEC])) == SPEC
    assert kw["container_labels"][LABEL_MODEL] == "qwen" and LABEL_PROJECT not in kw["container_labels"]
    assert kw["user"] == "1000:1000"
    assert kw["constraints"] == []  # no placement: wherever Swarm puts it
    assert "command" not in kw  # a service's command would replace the image's entrypoint, llama-server
    assert (flag(kw["args"], "--model"), flag(kw["args"], "--port")) == ("/models/qwen.gguf", "8080")
    # The SDK takes them as they are, for a create and for an update.
    for func in ("create", "update"):
        made = docker.models.services._get_create_service_kwargs(func, dict(kw))
        assert "Devices" not in json.dumps(made["task_template"])


@pytest.mark.parametrize("facts, placement, visible, constraint, layers, split", [
    (CPU, None, "void", [], "0", None),
    (CPU, Placement(node="box2", gpus=(0,)), "void", ["node.hostname==box2"], "0", None),
    (GPU, None, "all", [], "999", None),
    (GPU, Placement(gpus=(1,)), "1", ["node.hostname==box1"], "999", None),  # local: the manager's node
    (GPU, Placement(node="box2", gpus=(0, 2), tensor_split=(3, 1)), "0,2", ["node.hostname==box2"], "999", "3,1"),
], ids=["cpu", "cpu-on-node", "gpu-any", "gpu-local", "gpu-split-on-node"])
def test_placement_is_a_node_constraint_and_the_visible_devices(facts, placement, visible, constraint, layers, split):
    kw = service_kwargs(SPEC, facts, STACK, placement)
    assert env(kw)["NVIDIA_VISIBLE_DEVICES"] == visible
    assert kw["constraints"] == constraint
    assert flag(kw["args"], "--n-gpu-layers") == layers
    assert flag(kw["args"], "--tensor-split") == split
    assert ("CUDA_DEVICE_ORDER" in env(kw)) == (split is not None)
    assert kw["labels"][LABEL_PLACEMENT] == ("" if placement is None else placement.label())
    assert kw["image"] == ("llama:cuda" if facts.gpu else "llama:cpu")


def test_the_spec_gpus_without_a_placement():
    kw = service_kwargs(SPEC.model_copy(update={"gpus": (0, 1)}), GPU, STACK)
    assert env(kw)["NVIDIA_VISIBLE_DEVICES"] == "0,1"


def test_the_hash_is_of_the_spec_not_the_placement():
    bare = spec_hash(service_kwargs(SPEC, GPU, STACK))
    assert spec_hash(service_kwargs(SPEC, GPU, STACK, Placement(node="box2", gpus=(1,)))) == bare
    assert spec_hash(service_kwargs(SPEC, GPU, STACK)) == bare  # stable
    assert spec_hash(service_kwargs(SPEC.model_copy(update={"ctx_size": 4096}), GPU, STACK)) != bare
    assert spec_hash(service_kwargs(SPEC, CPU, STACK)) != bare  # another image, no GPU layers
    # The engine backend's label names: a restarted orchestrator adopts services the same way.
    assert set(service_kwargs(SPEC, CPU, STACK)["labels"]) == {LABEL_PROJECT, LABEL_MODEL, LABEL_HASH, LABEL_SPEC,
                                                                LABEL_PLACEMENT}


def swarm(facts: SwarmFacts = GPU) -> SwarmRuntime:
    runtime = SwarmRuntime(SimpleNamespace(), OrchestratorSettings(admin_token="t", model_logs="off"), STACK,
                           facts, local_id="n1", host=HostInfo(kind="swarm-cpu"))
    runtime.nodes = [node_from_attrs({"ID": i, "Description": {"Hostname": h}, "Status": {"State": "ready"}}, "n1")
                     for i, h in (("n1", "box1"), ("n2", "box2"))]
    return runtime


def test_a_placement_names_a_node_of_the_swarm():
    runtime = swarm()
    for node in ("local", "box1", "box2"):
        assert runtime.fingerprint(SPEC, Placement(node=node, gpus=(0,))).placement
    with pytest.raises(ApiError) as refused:
        runtime.fingerprint(SPEC, Placement(node="box9", gpus=(0,)))
    assert (refused.value.status, refused.value.code, refused.value.param) == (400, "invalid_placement", "node")
    assert "box1, box2, local" in refused.value.message


def test_the_probe_asks_health_at_the_tasks_address():
    asked = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200 if request.url.host == "10.0.1.2" else 503)

    async def scenario():
        runtime = swarm()
        runtime._probe = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        up, loading, unplaced = (Instance(id=n, name=n, model=n, state=InstanceState.RUNNING, spec_hash="h",
                                          probe_url=url)
                                 for n, url in (("a", "http://10.0.1.2:8080"), ("b", "http://10.0.1.3:8080"),
                                                ("c", None)))
        return [await runtime.healthy(i) for i in (up, loading, unplaced)]
    assert asyncio.run(scenario()) == [True, False, False]
    assert asked == ["http://10.0.1.2:8080/health", "http://10.0.1.3:8080/health"]
