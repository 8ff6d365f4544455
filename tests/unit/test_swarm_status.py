"""A Swarm service and its tasks as an Instance (pure): task states in the runtime's words, which
task is current, restarts since the last change, the node, the address; nodes as pools; the
task poller's changes; service log lines with their details."""

from __future__ import annotations

import json

import pytest

from contract.listing import InstanceState, ModelState
from contract.placement import Placement
from contract.spec import ModelSpec
from orchestrator.backends.docker.containers import LABEL_HASH, LABEL_MODEL, LABEL_PLACEMENT, LABEL_SPEC
from orchestrator.backends.runtime import Change, Instance
from orchestrator.backends.swarm.nodes import known_names, node_from_attrs, node_pools, unreachable
from orchestrator.backends.swarm.status import STATES, current_task, instance_from_service
from orchestrator.backends.swarm.watch import changes, split_details
from orchestrator.model_state import model_state

SPEC = ModelSpec(name="qwen", model="qwen.gguf")
UPDATED = "2026-12-03T10:00:00.5Z"
HOSTS = {"n1": "box1", "n2": "box2"}


CONTAINER = {"Image": "llama:cpu@sha256:abc", "Args": ["--ctx-size", "4096"]}


def service(replicas: int = 1, updated: str = UPDATED, force: int = 1) -> dict:
    return {"ID": "svc1", "UpdatedAt": updated, "Spec": {
        "Name": "llamadock-model-qwen", "Mode": {"Replicated": {"Replicas": replicas}},
        "Labels": {LABEL_MODEL: "qwen", LABEL_HASH: "h1", LABEL_PLACEMENT: "",
                   LABEL_SPEC: json.dumps(SPEC.model_dump(mode="json"))},
        # Swarm fills in fields the tasks' copies lack (Runtime here).
        "TaskTemplate": {"ContainerSpec": CONTAINER, "ForceUpdate": force, "Runtime": "container"}}}


def task(state: str, desired: str = "running", created: str = "2026-12-03T10:00:01.123456789Z", node: str = "n2",
         address: str | None = "10.0.1.7/24", exit_code: int = 0, pid: int = 4242, err: str | None = None,
         force: int = 1, args: tuple[str, ...] = ("--ctx-size", "4096")) -> dict:
    status = {"State": state, "Timestamp": created, "ContainerStatus": {"ExitCode": exit_code, "PID": pid}}
    if err:
        status["Err"] = err
    attachments = [{"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.9/24"]}]
    if address:
        attachments.append({"Network": {"Spec": {"Name": "llamadock"}}, "Addresses": [address]})
    return {"ID": f"t-{state}-{created}", "CreatedAt": created, "DesiredState": desired, "NodeID": node,
            "Status": status, "NetworksAttachments": attachments,
            "Spec": {"ContainerSpec": CONTAINER | {"Args": list(args)}, "ForceUpdate": force}}


def instance(svc: dict, tasks: list[dict]) -> Instance:
    return instance_from_service(svc, tasks, "llamadock", HOSTS, local_id="n1")


@pytest.mark.parametrize("state, expected, health", [
    ("new", InstanceState.CREATED, None),
    ("pending", InstanceState.CREATED, None),
    ("preparing", InstanceState.CREATED, None),
    ("starting", InstanceState.RUNNING, "starting"),  # runs; Swarm waits for its healthcheck
    ("running", InstanceState.RUNNING, "healthy"),  # the healthcheck passed
    ("complete", InstanceState.EXITED, None),
    ("shutdown", InstanceState.EXITED, None),
    ("failed", InstanceState.EXITED, None),
    ("rejected", InstanceState.EXITED, None),
    ("remove", InstanceState.REMOVING, None),
    ("orphaned", InstanceState.UNKNOWN, None),
    ("something-new", InstanceState.UNKNOWN, None),
])
def test_task_states_in_the_runtimes_words(state, expected, health):
    got = instance(service(), [task(state)])
    assert (got.state, got.health) == (expected, health)
    assert got.ready == (health == "healthy")


def test_every_swarm_task_state_is_mapped():
    assert set(STATES) == {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting",
                           "running", "complete", "shutdown", "failed", "rejected", "remove", "orphaned"}


def test_a_running_task_as_an_instance():
    got = instance(service(), [task("running")])
    assert (got.id, got.name, got.model, got.spec_hash) == ("svc1", "llamadock-model-qwen", "qwen", "h1")
    assert got.spec == SPEC
    assert got.image == "llama:cpu"  # the digest Swarm pinned left out
    assert got.node == "box2" and got.pids == (4242,)
    assert got.url == got.probe_url == "http://10.0.1.7:8080"  # on the overlay, not the ingress network
    assert got.started_at is not None and got.started_at.microsecond == 123456


def test_the_managers_own_node_is_the_local_one():
    assert instance(service(), [task("running", node="n1")]).node == "local"


def test_the_current_task_is_the_newest_wanted_running():
    old = task("shutdown", desired="shutdown", created="2026-12-03T10:00:01.9Z")
    new = task("running", created="2026-12-03T10:00:02.1Z")
    later_but_unwanted = task("running", desired="shutdown", created="2026-12-03T10:00:03Z")
    assert current_task([old, new, later_but_unwanted]) is new
    assert current_task([old]) is old
    assert current_task([]) is None
    # Docker trims trailing zeros of the nanoseconds: .5 comes after .123456789
    a = task("shutdown", created="2026-12-03T10:00:01.123456789Z")
    b = task("shutdown", created="2026-12-03T10:00:01.5Z")
    assert current_task([a, b]) is b


def test_a_stopped_service_is_exited_with_its_last_exit_code():
    got = instance(service(replicas=0), [task("shutdown", desired="shutdown", exit_code=143)])
    assert (got.state, got.exit_code, got.url, got.pids) == (InstanceState.EXITED, 143, None, ())
    assert instance(service(replicas=0), []).state is InstanceState.EXITED
    assert instance(service(replicas=1), []).state is InstanceState.CREATED  # made, no task yet


def test_restarts_count_failures_of_the_current_spec_only():
    older_spec = task("failed", desired="shutdown", created="2026-12-03T09:58:00Z", exit_code=1,
                      args=("--ctx-size", "512"))
    before_restart = task("failed", desired="shutdown", created="2026-12-03T09:59:00Z", exit_code=1, force=0)
    crashed = task("failed", desired="shutdown", created="2026-12-03T10:00:01Z", exit_code=137)
    again = task("ready", created="2026-12-03T10:00:04Z")
    # Counted by spec, not by time: Swarm rewrites the service (its UpdatedAt) after a rolling update.
    got = instance(service(updated="2026-12-03T10:00:05Z"), [older_spec, before_restart, crashed, again])
    assert got.restart_count == 1
    assert got.state is InstanceState.RESTARTING  # Swarm brings it back
    # The task before the new one did not fail: it is only being made (an update, a start).
    shut = task("shutdown", desired="shutdown", created="2026-12-03T10:00:02Z")
    got = instance(service(), [older_spec, before_restart, crashed, shut, again])
    assert (got.state, got.restart_count) == (InstanceState.CREATED, 1)
    assert instance(service(), [older_spec, again]).restart_count == 0


def test_a_rejected_task_says_why():
    from orchestrator.backends.swarm.status import task_error
    rejected = task("rejected", err="No such image: llama:nope", address=None)
    assert instance(service(), [rejected]).state is InstanceState.EXITED
    assert task_error(rejected) == "No such image: llama:nope"
    assert task_error(task("running")) is None
    # While Swarm makes the next task after a failure, the failed one's error is the last one.
    from orchestrator.backends.swarm.status import last_error
    failed = task("failed", desired="shutdown", err="task: non-zero exit (1)", created="2026-12-03T10:00:01Z")
    assert last_error([failed, task("ready", created="2026-12-03T10:00:03Z")]) == "task: non-zero exit (1)"
    assert last_error([task("running")]) is None


def node(node_id: str, hostname: str, *, memory: str | None = None, state: str = "ready",
         availability: str = "active") -> dict:
    labels = {} if memory is None else {"llamadock.memory_mb": memory}
    return {"ID": node_id, "Description": {"Hostname": hostname}, "Status": {"State": state},
            "Spec": {"Availability": availability, "Labels": labels}}


def running(model: str, on: str, state: InstanceState = InstanceState.RUNNING) -> Instance:
    return Instance(id=model, name=model, model=model, state=state, spec_hash="h", node=on)


def test_nodes_fold_into_memory_budgets():
    nodes = [node_from_attrs(n, local_id="n1") for n in (
        node("n2", "box2", memory="12000"), node("n1", "box1", memory="24000"),
        node("n3", "box3"), node("n4", "box4", memory="8000", state="down"),
        node("n5", "box5", memory="8000", availability="drain"))]
    pools = node_pools(nodes, [running("a", "local"), running("b", "box2"), running("c", "box2"),
                               running("gone", "box2", InstanceState.EXITED)])
    assert [(p.id.key, p.total_bytes, p.models) for p in pools] == [
        ("budget", 24000 * 2**20, ["a"]),  # the manager first, under the contract's local name
        ("box2/budget", 12000 * 2**20, ["b", "c"]),
        ("box3/budget", None, []),  # not labelled: its size unknown
    ]
    assert known_names(nodes) == ["box1", "box2", "box3", "box4", "box5", "local"]


@pytest.mark.parametrize("raw", ["lots", "-5", "0", "1.5"])
def test_a_bad_memory_label_is_named(raw):
    got = node_from_attrs(node("n2", "box2", memory=raw), local_id="n1")
    assert got.memory_bytes is None and "llamadock.memory_mb" in got.problem and "box2" in got.problem


@pytest.mark.parametrize("before, after, expected", [
    ({}, {}, []),
    ({"s1": ("running", True)}, {"s1": ("running", True)}, []),
    ({}, {"s1": ("created", False)}, [Change("s1")]),
    ({"s1": ("created", False)}, {"s1": ("running", True)}, [Change("s1")]),
    ({"s1": ("running", True)}, {"s1": ("exited", False)}, [Change("s1", down=True)]),
    ({"s1": ("running", True)}, {}, [Change("s1", down=True)]),
    ({"s1": ("exited", False)}, {}, [Change("s1")]),
    ({"a": ("x", True), "b": ("y", False)}, {"a": ("x2", True), "b": ("y", False)}, [Change("a")]),
])
def test_the_pollers_changes(before, after, expected):
    assert changes(before, after) == expected


@pytest.mark.parametrize("line, attrs, text", [
    ("com.docker.swarm.node.id=n2,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1 main: loading model",
     {"com.docker.swarm.node.id": "n2", "com.docker.swarm.service.id": "s1", "com.docker.swarm.task.id": "t1"},
     "main: loading model"),
    ("no details here", {}, "no details here"),
    ("", {}, ""),
])
def test_service_log_lines_with_details(line, attrs, text):
    assert split_details(line) == (attrs, text)


# ---- a node lost --------------------------------------------------------------------------------

def placed_on(node: str, replicas: int = 1) -> dict:
    svc = service(replicas)
    svc["Spec"]["Labels"][LABEL_PLACEMENT] = Placement(node=node, gpus=()).label()
    return svc


@pytest.mark.parametrize("svc, tasks, lost, expected", [
    # Its task still reads running (the manager heard nothing since), but its node is down: lost.
    (placed_on("box2"), [task("running")], {"box2": "down"}, InstanceState.LOST),
    # Swarm made a new task that no node may take (the placement pins box2): lost too, not "created".
    (placed_on("box2"), [task("running", desired="shutdown"), task("pending", node="",
                                                                   created="2026-12-03T10:00:09Z")],
     {"box2": "down"}, InstanceState.LOST),
    # Not placed by us: the task's node decides.
    (service(), [task("running")], {"box2": "disconnected"}, InstanceState.LOST),
    # Another node is down: nothing to do with it.
    (placed_on("box2"), [task("running")], {"box3": "down"}, InstanceState.RUNNING),
    # Stopped (scaled to 0): nothing runs there to lose.
    (placed_on("box2", replicas=0), [task("shutdown", desired="shutdown")], {"box2": "down"}, InstanceState.EXITED),
], ids=["running-on-a-down-node", "pending-pinned-to-it", "unplaced", "another-node", "stopped"])
def test_a_service_on_a_node_swarm_lost_touch_with_is_lost(svc, tasks, lost, expected):
    got = instance_from_service(svc, tasks, "llamadock", HOSTS, local_id="n1", unreachable=lost)
    assert got.state is expected
    if expected is InstanceState.LOST:
        assert got.node == "box2"
        assert model_state(got) == (ModelState.FAILED, "its node box2 cannot be reached (its engine stopped, "
                                                       "or it is cut off)")


def test_unreachable_nodes_are_down_unknown_or_disconnected_never_drained():
    nodes = [node_from_attrs(node("n1", "box1"), "n1"), node_from_attrs(node("n2", "box2", state="down"), "n1"),
             node_from_attrs(node("n3", "box3", state="disconnected"), "n1"),
             node_from_attrs(node("n4", "box4", availability="drain"), "n1")]
    assert unreachable(nodes) == {"box2": "down", "box3": "disconnected"}
