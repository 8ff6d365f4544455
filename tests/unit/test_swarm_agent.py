"""The node agent's service arguments, the swarm's pools and files from the agents' facts (pure,
table-tested), the reader that keeps each node's latest facts, and the listing carrying both."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from types import SimpleNamespace

import httpx
import pytest

from contract.listing import HostInfo, InstanceState
from contract.nodes import ModelFile, NodeFacts, NodeGpu, NodeView
from contract.placement import Placement
from contract.spec import ModelSpec
from orchestrator.backends.docker.containers import LABEL_HASH, LABEL_MODEL, LABEL_PROJECT, StackFacts
from orchestrator.backends.runtime import Change, Instance
from orchestrator.backends.swarm.agents import LABEL_AGENT, agent_service_kwargs
from orchestrator.backends.swarm.node_facts import STALE_S, NodeFactsReader
from orchestrator.backends.swarm.nodes import absent_on, node_from_attrs, node_pools, node_views
from orchestrator.backends.swarm.runtime import SwarmRuntime
from orchestrator.backends.swarm.services import LABEL_SERVICE_PROJECT, SwarmFacts
from orchestrator.settings import OrchestratorSettings
from test_operations import declared, make, model, run  # noqa: F401 (fixtures)

GIB = 1024**3
MIB = 1024**2
STACK = StackFacts(project="llamadock", network="llamadock", models_dir="/srv/llamadock/models",
                   cache_dir="/srv/llamadock/models/.cache", cpu_image="llama:cpu", gpu_image="llama:cuda",
                   user="1000:1000", app_image="llamadock/app:1.2")
NOW = datetime(2026, 12, 3, 17, 0, tzinfo=timezone.utc)


def env(kwargs: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in kwargs["env"])


def test_the_agent_service_runs_the_app_image_on_every_node():
    kwargs = agent_service_kwargs(STACK, "llamadock/app:1.2", port=8089)
    assert kwargs["name"] == "llamadock-agent" and kwargs["image"] == "llamadock/app:1.2"
    assert kwargs["command"] == ["python", "-m", "agent"]
    assert kwargs["mode"].mode == "global" and kwargs["endpoint_spec"]["Mode"] == "dnsrr"
    assert kwargs["networks"] == ["llamadock"] and kwargs["user"] == "1000:1000"
    assert [(m["Target"], m["Source"], m["ReadOnly"]) for m in kwargs["mounts"]] == [
        ("/models", "/srv/llamadock/models", True), ("/host/proc", "/proc", True)]
    assert env(kwargs) == {
        "LLAMADOCK_AGENT_PORT": "8089", "LLAMADOCK_MODELS_DIR": "/models", "LLAMADOCK_AGENT_PROC": "/host/proc",
        "LLAMADOCK_AGENT_NODE": "{{.Node.Hostname}}", "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "utility"}
    # Its own check, on its own port (the image's asks the gateway's 8080).
    check = kwargs["healthcheck"]["Test"]
    assert check[:3] == ["CMD", "python", "-c"] and ":8089/health" in check[3]
    assert kwargs["restart_policy"]["Condition"] == "any"
    # The project label: make down removes it with the model services; no model label: it is no model.
    assert kwargs["labels"][LABEL_PROJECT] == "llamadock" and LABEL_AGENT in kwargs["labels"]
    assert LABEL_MODEL not in kwargs["labels"]
    assert kwargs["container_labels"][LABEL_SERVICE_PROJECT] == "llamadock"  # down's wait for tasks covers it


def test_the_agents_hash_follows_its_spec():
    same = agent_service_kwargs(STACK, "llamadock/app:1.2")
    assert same["labels"][LABEL_HASH] == agent_service_kwargs(STACK, "llamadock/app:1.2")["labels"][LABEL_HASH]
    assert same["labels"][LABEL_HASH] != agent_service_kwargs(STACK, "llamadock/app:1.3")["labels"][LABEL_HASH]
    other_port = agent_service_kwargs(STACK, "llamadock/app:1.2", port=9000)
    assert same["labels"][LABEL_HASH] != other_port["labels"][LABEL_HASH]
    json.dumps(same, sort_keys=True)  # every part is plain data (the SDK's types are dicts)


# ---- facts into pools and files ---------------------------------------------------------------------

def node(node_id: str, hostname: str, memory: str | None = None, state: str = "ready") -> dict:
    labels = {"llamadock.memory_mb": memory} if memory else {}
    return {"ID": node_id, "Description": {"Hostname": hostname}, "Status": {"State": state},
            "Spec": {"Labels": labels, "Availability": "active"}}


NODES = [node_from_attrs(n, local_id="n1") for n in (
    node("n1", "box1", memory="24000"), node("n2", "box2", memory="12000"), node("n3", "box3", memory="8000"),
    node("n4", "box4", memory="8000", state="down"))]


def gpu(index: int, total_gib: int, free_gib: int, uuid: str | None = None) -> NodeGpu:
    return NodeGpu(index=index, uuid=uuid or f"GPU-{index}", name="NVIDIA RTX", total_bytes=total_gib * GIB,
                   free_bytes=free_gib * GIB, processes=[])


def facts(hostname: str, *gpus: NodeGpu, files: tuple[str, ...] = ("tiny.gguf",),
          nvml: str | None = None) -> NodeFacts:
    return NodeFacts(hostname=hostname, host_kind="linux", memory_total_bytes=32 * GIB, gpus=list(gpus), nvml=nvml,
                     files=[ModelFile(name=f, size_bytes=1, mtime=0) for f in files], read_at=NOW)


def running(model: str, node_name: str, gpus: tuple[int, ...] | None = None, spec_gpus="all",
            state: InstanceState = InstanceState.RUNNING) -> Instance:
    placement = Placement(node=node_name, gpus=gpus).label() if gpus is not None else ""
    spec = ModelSpec(name=model, model="tiny.gguf", gpus=spec_gpus)
    return Instance(id=model, name=model, model=model, state=state, spec_hash="h", spec=spec, placement=placement,
                    node=node_name)


CPU_ONLY = facts("box3", nvml="NVML library not found: no NVIDIA driver visible here")


@pytest.mark.parametrize("known, instances, expected", [
    # no facts at all: every ready node's memory budget, as before the agent
    ({}, [running("a", "local")],
     [("budget", 24000 * MIB, None, ["a"]), ("box2/budget", 12000 * MIB, None, []),
      ("box3/budget", 8000 * MIB, None, [])]),
    # the manager with two GPUs (keys gpu0/gpu1), box2 with one, box3 a CPU node (its budget); box4 is down
    ({"n1": facts("box1", gpu(0, 24, 20), gpu(1, 12, 11)), "n2": facts("box2", gpu(0, 8, 7)), "n3": CPU_ONLY},
     [running("a", "local", gpus=(1,)), running("b", "local", gpus=(0, 1)), running("c", "box2", gpus=(0,)),
      running("d", "box3"), running("gone", "box2", gpus=(0,), state=InstanceState.EXITED)],
     [("gpu0", 24 * GIB, 20 * GIB, ["b"]), ("gpu1", 12 * GIB, 11 * GIB, ["a", "b"]),
      ("box2/gpu0", 8 * GIB, 7 * GIB, ["c"]), ("box3/budget", 8000 * MIB, None, ["d"])]),
    # without a placement label: by the spec's gpus (all, or the listed ones)
    ({"n2": facts("box2", gpu(0, 8, 7), gpu(1, 8, 8))},
     [running("e", "box2"), running("f", "box2", spec_gpus=(1,))],
     [("budget", 24000 * MIB, None, []), ("box2/gpu0", 8 * GIB, 7 * GIB, ["e"]),
      ("box2/gpu1", 8 * GIB, 8 * GIB, ["e", "f"]), ("box3/budget", 8000 * MIB, None, [])]),
])
def test_pools_from_the_agents_facts(known, instances, expected):
    pools = node_pools(NODES, instances, known)
    assert [(p.id.key, p.total_bytes, p.free_bytes, p.models) for p in pools] == expected


def test_a_gpu_pool_carries_its_identity():
    [pool, *_] = node_pools(NODES, [], {"n1": facts("box1", gpu(0, 24, 20, uuid="GPU-abc"))})
    assert (pool.id.node, pool.id.gpu, pool.uuid, pool.name) == ("local", 0, "GPU-abc", "NVIDIA RTX")


@pytest.mark.parametrize("spec, known, expected", [
    (ModelSpec(name="t", model="tiny.gguf"), {"n1": facts("box1"), "n2": facts("box2")}, {}),
    (ModelSpec(name="t", model="big.gguf"), {"n1": facts("box1"), "n2": facts("box2", files=("big.gguf",))},
     {"local": "big.gguf not in the models directory of box1"}),
    # its projector too; a node without fresh facts (n3) is not judged; a down node (n4) neither
    (ModelSpec(name="v", model="sub/v.gguf", mmproj="sub/mmproj.gguf"),
     {"n1": facts("box1", files=("sub/v.gguf",)), "n2": facts("box2", files=()),
      "n4": facts("box4", files=())},
     {"local": "sub/mmproj.gguf not in the models directory of box1",
      "box2": "sub/v.gguf and sub/mmproj.gguf not in the models directory of box2"}),
    # a Hugging Face spec needs no file: llama-server downloads it where it runs
    (ModelSpec(name="h", hf="ggml-org/gemma-3-1b-it-GGUF:Q4_K_M"), {"n1": facts("box1", files=())}, {}),
    # a spec's node rules out every other ready node, by hostname or as `local`
    (ModelSpec(name="t", model="tiny.gguf", node="box2"), {"n1": facts("box1"), "n2": facts("box2")},
     {"local": "the spec's node is box2", "box3": "the spec's node is box2"}),  # box3: ready, facts unknown
    (ModelSpec(name="t", model="tiny.gguf", node="local"), {},
     {"box2": "the spec's node is local", "box3": "the spec's node is local"}),
])
def test_absent_on_names_each_node_without_the_file(spec, known, expected):
    assert absent_on(spec, NODES, known) == expected


def test_node_views():
    views = node_views(NODES, {"n1": facts("box1", gpu(0, 24, 20)), "n3": CPU_ONLY},
                       {"n1": 0.42, "n3": 1.0, "n2": 12.3})
    assert views == [
        NodeView(name="local", hostname="box1", ready=True, host_kind="linux", gpus=1, files=1, facts_age_s=0.4),
        NodeView(name="box2", hostname="box2", ready=True, facts_age_s=12.3),  # stale: its facts unknown
        NodeView(name="box3", hostname="box3", ready=True, host_kind="linux", gpus=0, files=1, facts_age_s=1.0,
                 nvml=CPU_ONLY.nvml),
        NodeView(name="box4", hostname="box4", ready=False),
    ]


# ---- the reader ------------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_reader_keeps_each_nodes_latest_facts_and_lets_them_go_stale():
    clock, changes = Clock(), []
    answers = {"http://10.0.1.2:8089/facts": facts("box1").model_dump_json().encode(),
               "http://10.0.1.3:8089/facts": facts("box2", gpu(0, 8, 7)).model_dump_json().encode()}

    def fetch(url: str) -> bytes:
        if url not in answers:
            raise httpx.ConnectTimeout("no answer")
        return answers[url]

    targets = {"n1": "http://10.0.1.2:8089/facts", "n2": "http://10.0.1.3:8089/facts"}
    reader = NodeFactsReader(lambda: targets, changes.append, fetch=fetch, clock=clock)
    try:
        reader.step()
        assert set(reader.fresh()) == {"n1", "n2"} and changes == [Change()]
        clock.now += 1
        reader.step()
        assert changes == [Change()]  # nothing the listing shows changed: no change reported
        # box2's agent goes quiet: its facts stay, ageing, and are fresh no more after STALE_S.
        del answers["http://10.0.1.3:8089/facts"]
        clock.now += 1
        reader.step()
        assert reader.fresh()["n2"].gpus[0].total_bytes == 8 * GIB and changes == [Change()]
        clock.now += STALE_S
        reader.step()
        assert set(reader.fresh()) == {"n1"} and reader.ages()["n2"] == pytest.approx(STALE_S + 1)
        assert changes == [Change(), Change()]
        # A file appears on box1: the listing's files change.
        more = facts("box1", files=("tiny.gguf", "new.gguf"))
        answers["http://10.0.1.2:8089/facts"] = more.model_dump_json().encode()
        reader.step()
        assert len(changes) == 3 and reader.fresh()["n1"].has_file("new.gguf")
        # An answer that is not facts is not taken: the old ones stay.
        answers["http://10.0.1.2:8089/facts"] = b'{"hostname": "box1"}'
        clock.now += 1
        reader.step()
        assert reader.fresh()["n1"].has_file("new.gguf") and reader.ages()["n1"] == pytest.approx(1)
    finally:
        reader.stop()


def swarm_runtime() -> SwarmRuntime:
    runtime = SwarmRuntime(SimpleNamespace(), OrchestratorSettings(admin_token="t", model_logs="off"), STACK,
                           SwarmFacts(gpu=True, local_hostname="box1"), local_id="n1", host=HostInfo(kind="swarm"))
    runtime.nodes = NODES
    return runtime


def test_the_runtime_reaches_each_running_agent_task_at_its_overlay_address():
    runtime = swarm_runtime()
    runtime.agents.service_id = "agent1"
    asked = []

    def tasks(filters):
        asked.append(filters)
        attached = [{"Network": {"Spec": {"Name": "llamadock"}}, "Addresses": ["10.0.1.9/24"]}]
        return [{"NodeID": "n1", "Status": {"State": "running"}, "NetworksAttachments": attached},
                {"NodeID": "n2", "Status": {"State": "starting"},
                 "NetworksAttachments": [{"Network": {"Spec": {"Name": "llamadock"}}, "Addresses": ["10.0.1.10/24"]}]},
                {"NodeID": "n3", "Status": {"State": "preparing"}, "NetworksAttachments": attached}]
    runtime.agents.client = SimpleNamespace(api=SimpleNamespace(tasks=tasks))
    assert runtime.agents.targets() == {"n1": "http://10.0.1.9:8089/facts", "n2": "http://10.0.1.10:8089/facts"}
    assert asked == [{"service": "agent1", "desired-state": "running"}]


def test_without_facts_the_runtime_offers_budgets_and_judges_no_files():
    runtime = swarm_runtime()
    assert runtime.absent_on(ModelSpec(name="t", model="big.gguf")) == {}
    assert [p.id.key for p in runtime.pools([])] == ["budget", "box2/budget", "box3/budget"]
    assert [v.gpus for v in runtime.node_views()] == [None, None, None, None]


def test_the_listing_carries_absent_on_and_the_nodes(make):
    manager, runtime = make(declared(*model("a"), *model("b", file="b.gguf")))
    runtime.absent_files = {"b.gguf": {"box2": "b.gguf not in the models directory of box2"}}
    runtime.views = [NodeView(name="local", hostname="box1", ready=True, gpus=0, files=2, facts_age_s=0.3)]

    async def scenario():
        first = await manager.refresh()
        runtime.views = [NodeView(name="local", hostname="box1", ready=True, gpus=0, files=2, facts_age_s=0.9)]
        again = await manager.refresh()
        runtime.views = [NodeView(name="local", hostname="box1", ready=True, gpus=None, files=None, facts_age_s=11)]
        stale = await manager.refresh()
        return first, again, stale
    first, again, stale = run(scenario)
    assert first.find("a").absent_on == {} and first.find("b").absent_on == {
        "box2": "b.gguf not in the models directory of box2"}
    assert first.nodes[0].files == 2
    assert again.version == first.version  # only the facts' age moved: no change to wake the gateway for
    assert stale.version > first.version and stale.nodes[0].gpus is None


def test_a_gpus_use_by_each_model_is_mapped_from_its_task_containers_processes():
    from contract.nodes import GpuProcessUse
    from orchestrator.backends.swarm.nodes import model_bytes

    a = replace(running("a", "box2", (0,)), container_id="c" * 64)
    b = replace(running("b", "box2", (0,)), container_id="d" * 64)
    seen = gpu(0, 24, 10).model_copy(update={"processes": [
        GpuProcessUse(container_id="c" * 64, pid=11, used_bytes=3 * GIB),
        GpuProcessUse(container_id="c" * 64, pid=12, used_bytes=GIB),  # a second process of a's server
        GpuProcessUse(container_id="e" * 64, pid=13, used_bytes=5 * GIB),  # not ours
        GpuProcessUse(container_id=None, pid=14, used_bytes=GIB)]})  # not in a container
    assert model_bytes(seen, [a, b]) == {"a": 4 * GIB}
    assert model_bytes(seen.model_copy(update={"processes": None}), [a, b]) is None  # WSL2: not known
    [pool] = [p for p in node_pools(NODES, [a, b], {"n2": facts("box2", seen)}) if p.id.key == "box2/gpu0"]
    assert pool.model_bytes == {"a": 4 * GIB} and pool.models == ["a", "b"]
