"""The stack in swarm mode on a real three-node swarm (support/dind.py: this engine as the manager,
two Docker-in-Docker workers, node2 and node3), driven as a user drives it: `LLAMADOCK_BACKEND=swarm
make up`, `make add` three tiny models, chats through the published port, then the faults a home lab
has: a box switched off, a cable pulled. `make down` at the end must leave nothing on any node.

Memory budgets (node label llamadock.memory_mb): 150 MiB on each node, and each model declares
MEMORY=100MiB, so a node holds one model: the three land one per node, and after a node is lost its
model fits only where another model has gone.

Bounds asserted: a request to a model whose node is gone is answered 503 with Retry-After (never a
hang, never another model's answer) within LOSS_BOUND_S of the loss; once the gateway has said so, a
request that waits is waiting for the model's start elsewhere; and the model serves again, placed on
a node with room, within REPLACE_BOUND_S. Swarm's dispatcher heartbeat is lowered to 2 s
for the bed (dind.HEARTBEAT_S), so the manager marks a stopped node down within seconds.

The tests run in order and share one stack and one bed."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
import openai
import pytest

from contract.status import GatewayStatus
from support.dind import MANAGER, WORKERS, Bed, multi_node_swarm
from support.llama import make_tiny_model, vocab_path
from support.stack import Stack, local_llama_image, require_docker
from support.swarm import networks, sh
from support.waiting import wait_until

require_docker()
pytestmark = pytest.mark.docker

MODELS = ("alpha", "beta", "gamma")
BUDGET_MB = 150
MODEL_MEMORY = "100MiB"
LOSS_BOUND_S = 30  # node lost -> a request for its model is answered (503 + Retry-After, or served elsewhere)
REPLACE_BOUND_S = 180  # node lost -> its model serves again on another node
# A request queued behind the model's new start waits for it, as for any start: a tiny model loads in
# under a second, but after a cut the overlay can take 15 s more to carry traffic to the new task
# (measured; our reading: Swarm's gossip still tries the cut-off node). No answer within HANG_S is a hang.
HANG_S = 60
SLOW_S = 10  # a request this slow gets a snapshot of the stack, reported
TRAILING_REMOVAL_S = 5  # make down returned -> a worker has removed its last task container
CHAT = [{"role": "user", "content": "Say hello."}]


@dataclass
class Setup:
    stack: Stack
    bed: Bed


@pytest.fixture(scope="module")
def setup(tmp_path_factory, llama_server_bin):
    overlay = f"llamadock-test-{uuid.uuid4().hex[:8]}"
    stack = Stack(tmp_path_factory.mktemp("swarm-nodes"), llama_image=local_llama_image(),
                  env={"LLAMADOCK_BACKEND": "swarm", "LLAMADOCK_SWARM_NETWORK": overlay, "LLAMADOCK_NETWORK": "auto"})
    for seed, name in enumerate(MODELS, start=11):
        make_tiny_model(stack.models / f"{name}.gguf", name=name, seed=seed, vocab=vocab_path(llama_server_bin))
    # The app image the stack runs, built before the bed so it is loaded into each worker (the
    # per-node agent runs it there); `make up` then finds it built.
    stack.compose("build")
    app_image = stack.env.get("LLAMADOCK_APP_IMAGE", "llamadock/app:dev")
    with multi_node_swarm(models=stack.models, overlay=overlay, images=[stack.env["LLAMADOCK_LLAMA_IMAGE_CPU"],
                                                                        app_image],
                          memory_mb={MANAGER: BUDGET_MB, "node2": BUDGET_MB, "node3": BUDGET_MB},
                          project_prefix=stack.project) as bed:
        try:
            yield Setup(stack, bed)
        finally:
            stack.force_down()


@pytest.fixture(autouse=True)
def healed(setup):
    """After each test, every node up and connected again, whatever the test did or where it failed."""
    yield
    setup.bed.heal()


# ---- reading the stack --------------------------------------------------------------------------

def status(stack: Stack) -> GatewayStatus:
    return GatewayStatus.model_validate_json(httpx.get(stack.url + "/status", timeout=10).content)


def nodes_of(stack: Stack) -> dict[str, str | None]:
    """Each model's node as the gateway's scheduler view has it (`local`: the manager's)."""
    view = status(stack).scheduler
    assert view is not None, "no scheduler view in /status"
    return {name: view.models[name].node for name in MODELS if name in view.models}


def service(stack: Stack, model: str) -> str:
    return f"{stack.project}-model-{model}"


def running_tasks(stack: Stack, model: str) -> list[list[str]]:
    """[node, state] of each task Swarm means to run (desired state running)."""
    out = sh("docker", "service", "ps", service(stack, model), "--filter", "desired-state=running",
             "--format", "{{.Node}} {{.CurrentState}}")
    return [line.split()[:2] for line in out.splitlines()]


def constraints(stack: Stack, model: str) -> list[str]:
    return sh("docker", "service", "inspect", service(stack, model), "--format",
              "{{json .Spec.TaskTemplate.Placement.Constraints}}")


def hostname_of(bed: Bed, node: str) -> str:
    return bed.manager_hostname if node == "local" else node


def project_services(stack: Stack) -> list[str]:
    """Every service of the project: by its label, or named after it (the per-node agent too)."""
    labelled = sh("docker", "service", "ls", "--format", "{{.Name}}", "--filter",
                  f"label=io.llamadock.project={stack.project}").split()
    named = [n for n in sh("docker", "service", "ls", "--format", "{{.Name}}").split()
             if n.startswith(stack.project)]
    return sorted(set(labelled) | set(named))


# ---- a request during a fault ---------------------------------------------------------------------

@dataclass
class Snapshot:
    """The stack as a slow request found it, SLOW_S after it was sent."""
    phase: str | None  # the model's, in the gateway's scheduler
    node: str | None  # where the scheduler has it (or is starting it)
    text: str  # for a report or a failure's message


@dataclass
class Answer:
    asked_s: float  # since the fault
    at_s: float  # answered, since the fault
    status: int
    retry_after: str | None
    model: str | None  # X-Llamadock-Model
    body: str
    slow: Snapshot | None  # taken when it had waited SLOW_S


def snapshot(stack: Stack, bed: Bed, model: str) -> Snapshot:
    """The model as the gateway's scheduler sees it, its tasks (node, address, state), whether the
    gateway's container reaches each running task's server over the overlay and whether the task's
    own node does, and the gateway's and orchestrator's last lines."""
    try:
        seen = status(stack).scheduler.models.get(model)
    except Exception as exc:  # the snapshot must come out whatever /status does
        seen, problem = None, f"/status failed: {exc!r}"
    else:
        problem = ""
    lines = []
    for task in sh("docker", "service", "ps", "-q", "--filter", "desired-state=running", service(stack, model),
                   check=False).split():
        fields = sh("docker", "inspect", task, "--format",
                    "{{.NodeID}} {{range .NetworksAttachments}}{{range .Addresses}}{{.}} {{end}}{{end}}"
                    "{{.Status.State}} {{.Status.ContainerStatus.ContainerID}}", check=False).split()
        node, address, state, container = (fields + ["?"] * 4)[:4]
        hostname = sh("docker", "node", "inspect", node, "--format", "{{.Description.Hostname}}", check=False)
        ip = address.partition("/")[0]
        from_gateway = stack.compose("exec", "-T", "gateway", "python", "-c",
                                     f"import httpx; print(httpx.get('http://{ip}:8080/health', timeout=2).status_code)",
                                     check=False)
        on_node = bed.docker(hostname, "exec", container, "curl", "-s", "-m", "2", "http://127.0.0.1:8080/health",
                             check=False)
        lines.append(f"  {hostname} {address} {state} {container[:12]}: /health from the gateway "
                     f"{(from_gateway.stdout or from_gateway.stderr).strip()[-100:]!r}, on its node {on_node[:60]!r}")
    logs = stack.compose("logs", "--no-color", "-t", "--tail", "30", "gateway", "orchestrator", check=False).stdout
    return Snapshot(seen.phase if seen else None, seen.node if seen else None,
                    f"{problem}scheduler view: {seen}\ntasks:\n" + "\n".join(lines) + f"\nlogs:\n{logs}")


def ask(stack: Stack, bed: Bed, model: str, since: float) -> Answer:
    """One short chat; a snapshot of the stack if it takes SLOW_S; no answer within HANG_S fails."""
    asked = time.monotonic() - since
    taken: list[Snapshot] = []
    timer = threading.Timer(SLOW_S, lambda: taken.append(snapshot(stack, bed, model)))
    timer.start()
    try:
        response = httpx.post(stack.url + "/v1/chat/completions", timeout=HANG_S,
                              json={"model": model, "messages": CHAT, "max_tokens": 4})
    except httpx.TimeoutException:
        timer.join()
        pytest.fail(f"a request for {model} asked {asked:.1f} s after the fault had no answer in {HANG_S} s; "
                    f"after {SLOW_S} s the stack was:\n{taken[0].text if taken else '?'}")
    finally:
        timer.cancel()
    timer.join()  # a snapshot begun is finished
    return Answer(asked, time.monotonic() - since, response.status_code, response.headers.get("retry-after"),
                  response.headers.get("x-llamadock-model"), response.text[:300], taken[0] if taken else None)


def through_fault(stack: Stack, bed: Bed, model: str, lost: str,
                  since: float) -> tuple[float | None, float, list[Answer]]:
    """Ask for ``model`` until it serves again after node ``lost`` failed at ``since``: every answer is
    its own 200 or a 503 with Retry-After, the first within LOSS_BOUND_S, and once the gateway has
    said the node is lost a request that waits is waiting for the model's start elsewhere (a load),
    never on the lost node. (seconds to the first 503 or None, seconds until served, answers)."""
    answers: list[Answer] = []
    first_503 = None
    while True:
        answer = ask(stack, bed, model, since)
        answers.append(answer)
        trail = "\n".join(f"  {a.asked_s:6.1f} -> {a.at_s:6.1f} s  {a.status} retry-after={a.retry_after} "
                          f"model={a.model} {a.body[:120]}" for a in answers[-12:])
        if answer.slow is not None:
            print(f"{model}: a request asked {answer.asked_s:.1f} s after the fault waited "
                  f"{answer.at_s - answer.asked_s:.1f} s; after {SLOW_S} s:\n{answer.slow.text}", file=sys.stderr)
            if any("model_node_lost" in a.body for a in answers[:-1]):  # it knew: the model starts elsewhere
                assert answer.slow.phase in ("starting", "ready") and answer.slow.node != lost, \
                    f"{model}: a request waited {SLOW_S} s after the loss of {lost} was known, the model " \
                    f"{answer.slow.phase} on {answer.slow.node}:\n{trail}\n{answer.slow.text}"
        assert first_503 is not None or answer.at_s < LOSS_BOUND_S, \
            f"no answer for {model} within {LOSS_BOUND_S} s of the fault:\n{trail}"
        if answer.status == 200:  # its node is gone: this is a new task's answer
            assert answer.model == model, f"another model answered for {model}:\n{trail}"
            return first_503, answer.at_s, answers
        elif answer.status == 503:
            assert answer.retry_after, f"503 without Retry-After:\n{trail}"
            first_503 = answer.at_s if first_503 is None else first_503
        else:
            pytest.fail(f"{model}: {answer.status} during the fault (only 503 + Retry-After or the model's own "
                        f"answer are right):\n{trail}")
        assert answer.at_s < REPLACE_BOUND_S, f"{model} not serving again within {REPLACE_BOUND_S} s:\n{trail}"
        time.sleep(0.2)  # pacing between requests, not a wait for a state


def timeline(answers: list[Answer]) -> str:
    return ", ".join(f"{a.status} ({a.asked_s:.1f}->{a.at_s:.1f} s)" for a in answers)


class NodeWatch(threading.Thread):
    """Seconds until the manager marks a node down, measured beside the requests."""

    def __init__(self, bed: Bed, hostname: str) -> None:
        super().__init__(daemon=True)
        self.bed, self.hostname, self.seconds, self.error = bed, hostname, None, None

    def run(self) -> None:
        try:
            self.seconds = self.bed.wait_node(self.hostname, "down", 60)
        except AssertionError as exc:
            self.error = str(exc)


def one_server(setup: Setup, model: str, hold_s: float = 10) -> None:
    """Exactly one task of ``model`` running and one container of it on all the nodes together,
    and still so ``hold_s`` later (a node that returns must not bring back a second)."""
    stack, bed = setup.stack, setup.bed
    wait_until(lambda: len(running_tasks(stack, model)) == 1
               and sum(map(len, bed.running_task_containers(service(stack, model)).values())) == 1,
               60, f"one task and one container of {model}",
               detail=lambda: f"{running_tasks(stack, model)} {bed.running_task_containers(service(stack, model))}")
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline:  # an invariant over a window, not a wait
        containers = bed.running_task_containers(service(stack, model))
        assert sum(map(len, containers.values())) == 1, f"{model} runs twice: {containers}"
        assert len(running_tasks(stack, model)) == 1, running_tasks(stack, model)
        time.sleep(0.5)


def report(what: str, seconds: float | None) -> None:
    print(f"{what}: {'-' if seconds is None else f'{seconds:.1f} s'}", file=sys.stderr)


# ---- the tests ----------------------------------------------------------------------------------

def test_the_bed_has_three_ready_nodes_and_its_overlay_carries_traffic(setup):
    """The bed itself: three Ready nodes with their budgets, and a llama-server pinned to node3 answers
    /health by its service name from a container on the manager, over the overlay (VXLAN, dnsrr)."""
    bed, stack = setup.bed, setup.stack
    nodes = sh("docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}}").splitlines()
    assert sorted(nodes) == sorted(f"{h} Ready" for h in bed.hostnames()), nodes
    for hostname in bed.hostnames():
        assert sh("docker", "node", "inspect", hostname, "--format",
                  '{{index .Spec.Labels "llamadock.memory_mb"}}') == str(BUDGET_MB)
    for key, seconds in bed.timings.items():
        report(f"bed {key}", seconds)
    probe = f"{stack.project}-probe"
    try:
        sh("docker", "service", "create", "-d", "--name", probe, "--constraint", "node.hostname==node3",
           "--endpoint-mode", "dnsrr", "--network", bed.overlay, "--no-healthcheck",
           "--mount", f"type=bind,src={stack.models},dst=/models,ro",
           stack.env["LLAMADOCK_LLAMA_IMAGE_CPU"], "--host", "0.0.0.0", "--port", "8080",
           "-m", "/models/alpha.gguf", "-c", "512")
        wait_until(lambda: sh("docker", "service", "ps", probe, "--format", "{{.Node}} {{.CurrentState}}")
                   .startswith("node3 Running"), 60, "the probe's task running on node3",
                   detail=lambda: sh("docker", "service", "ps", "--no-trunc", probe))
        out = subprocess.run(["docker", "run", "--rm", "--network", bed.overlay, "--entrypoint", "sh",
                              stack.env["LLAMADOCK_LLAMA_IMAGE_CPU"], "-c",
                              f"for i in $(seq 60); do curl -sf -m 2 http://{probe}:8080/health && exit 0; "
                              "sleep 0.5; done; exit 1"], capture_output=True, text=True, timeout=90)
        assert out.returncode == 0 and '"ok"' in out.stdout, out.stdout + out.stderr
    finally:
        sh("docker", "service", "rm", probe, check=False)


def test_make_up_in_swarm_mode_on_the_manager(setup):
    began = time.monotonic()
    up = setup.stack.run("make", "up")
    report("make up (3-node swarm)", time.monotonic() - began)
    assert "llamadock is up" in up.stdout, up.stdout


def test_three_models_land_one_per_node_by_memory(setup):
    stack, bed = setup.stack, setup.bed
    for name in MODELS:
        began = time.monotonic()
        added = stack.run("make", "add", f"NAME={name}", f"MODEL={name}.gguf", "CTX=512", f"MEMORY={MODEL_MEMORY}")
        report(f"make add {name} -> ready", time.monotonic() - began)
        assert f"{name} is ready" in added.stdout, added.stdout
    print(stack.run("make", "ps").stdout, file=sys.stderr)
    placed = nodes_of(stack)
    assert sorted(placed.values()) == sorted(["local", *WORKERS]), \
        f"100 MiB models on 150 MiB nodes must land one per node: {placed}"
    for name, node in placed.items():
        [[task_node, _]] = running_tasks(stack, name)
        assert task_node == hostname_of(bed, node), (name, node, task_node)
        # Placed by the scheduler by memory, not left to Swarm's spread: the service names its node.
        assert f"node.hostname=={hostname_of(bed, node)}" in constraints(stack, name), \
            f"{name}: no placement constraint for its node ({constraints(stack, name)})"


def test_a_chat_streams_through_the_overlay_to_the_model_on_node3(setup):
    stack = setup.stack
    placed = nodes_of(stack)
    [model] = [name for name, node in placed.items() if node == "node3"] or pytest.fail(f"none on node3: {placed}")
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=CHAT, max_tokens=16,
                                                           temperature=0, stream=True)
    assert raw.headers.get("x-llamadock-model") == model, dict(raw.headers)
    pieces = list(raw.parse())
    texts = [c.choices[0].delta.content for c in pieces if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 2 and all(c.model == model for c in pieces), pieces


@pytest.mark.timeout(600)  # the re-placement bound, a node's return and the hold, past pytest's 300 s default
def test_a_lost_node_gives_503_then_its_model_is_placed_again_and_no_duplicate_when_it_returns(setup):
    stack, bed = setup.stack, setup.bed
    placed = nodes_of(stack)
    lost = next((name for name, node in placed.items() if node == "node3"), None) or pytest.fail(
        f"no model on node3 to lose: {placed}")
    # Room for it elsewhere: the model on node2 goes.
    freed = next((name for name, node in placed.items() if node == "node2"), None)
    if freed:
        stack.run("make", "rm", f"NAME={freed}")
    watch = NodeWatch(bed, "node3")
    began = time.monotonic()
    bed.stop_node("node3")
    watch.start()
    try:
        first_503, served, answers = through_fault(stack, bed, lost, "node3", began)
    finally:
        watch.join(60)
        report("swarm marks the stopped node down", watch.seconds)
    report("node stop -> first 503", first_503)
    report("node stop -> served again", served)
    print(f"answers during the loss: {timeline(answers)}", file=sys.stderr)
    assert watch.error is None, watch.error
    node = nodes_of(stack)[lost]
    assert node in ("local", "node2"), f"{lost} serves from {node} after node3 was lost"

    began = time.monotonic()
    bed.start_node("node3")
    back = bed.wait_node("node3", "ready", 90)
    report("node3 back Ready after start", time.monotonic() - began)
    assert back < 90
    one_server(setup, lost)


@pytest.mark.timeout(600)
def test_a_cut_network_gives_503_within_the_bound_and_no_duplicate_after(setup):
    stack, bed = setup.stack, setup.bed
    placed = nodes_of(stack)
    on_worker = [(name, node) for name, node in placed.items() if node in WORKERS]
    if not on_worker:
        pytest.fail(f"no model on a worker node to cut off: {placed}")
    model, node = on_worker[0]
    watch = NodeWatch(bed, node)
    began = time.monotonic()
    bed.cut_network(node)
    watch.start()
    try:
        first_503, served, answers = through_fault(stack, bed, model, node, began)
    finally:
        watch.join(60)
        report(f"swarm marks the cut-off node {node} down", watch.seconds)
        bed.restore_network(node)
    report("network cut -> first 503", first_503)
    report("network cut -> served again", served)
    print(f"answers during the cut: {timeline(answers)}", file=sys.stderr)
    assert nodes_of(stack)[model] != node
    bed.wait_node(node, "ready", 90)
    one_server(setup, model)


def test_make_down_leaves_no_service_task_or_network_on_any_node(setup):
    stack, bed = setup.stack, setup.bed
    began = time.monotonic()
    stack.run("make", "down")
    report("make down (3-node swarm)", time.monotonic() - began)
    assert project_services(stack) == []
    # On every node. make down waits until the manager has no task of the removed services on a
    # Ready node; a worker removes the last container a moment after it reports the task gone
    # (0.8 s measured), hence the short bound.
    label = f"io.llamadock.swarm-project={stack.project}"
    returned = time.monotonic()
    wait_until(lambda: not any(bed.all_containers(label).values()), TRAILING_REMOVAL_S,
               "no task container of the stack on any node",
               detail=lambda: "; ".join(f"{node}: " + bed.docker(node, "ps", "-a", "--filter", label, "--format",
                                                                  "{{.Names}} {{.Status}}").replace("\n", ", ")
                                        for node in bed.hostnames()))
    report("make down returned -> no task container on any node", time.monotonic() - returned)
    assert stack.leftovers() == []
    assert not [n for n in networks() if n.startswith(stack.project)]
    on_overlay = sh("docker", "network", "inspect", bed.overlay, "--format", "{{range .Containers}}{{.Name}} {{end}}")
    assert [n for n in on_overlay.split() if n.startswith(stack.project)] == []
