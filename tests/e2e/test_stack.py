"""The whole stack on a real Docker engine, as a user drives it: `make up`, add a tiny
GGUF model, chat through the gateway, restart services, crash and remove the model,
`make down`. The tests run in order and share one stack."""

from __future__ import annotations

import concurrent.futures
import json
import shutil

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.net import is_loopback, listeners, listening_ports
from support.stack import REPO, Stack, local_llama_image, require_docker
from support.waiting import wait_until

require_docker()
pytestmark = pytest.mark.docker

CHAT = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    stack = Stack(tmp_path_factory.mktemp("stack"), llama_image=local_llama_image())
    shutil.copy(tiny_models["tiny-a"], stack.models / "tiny.gguf")
    shutil.copy(tiny_models["tiny-b"], stack.models / "other.gguf")
    (stack.models / "notes.gguf").write_text("not a model")
    try:
        yield stack
    finally:
        stack.force_down()


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def catalog_text(stack: Stack) -> str:
    return (stack.config / "models.yaml").read_text()


def models_by_name(stack: Stack) -> dict[str, dict]:
    return {m["id"]: m for m in httpx.get(stack.url + "/v1/models", timeout=10).json()["data"]}


def service_containers(stack: Stack) -> dict[str, str]:
    """The gateway's and orchestrator's container IDs (a recreated one has a new ID)."""
    return {service: stack.run("docker", "inspect", "--format", "{{.Id}}", f"{stack.project}-{service}-1").stdout.strip()
            for service in ("gateway", "orchestrator")}


def test_make_up_starts_cleanly_with_no_model(stack):
    assert not (stack.config / "models.yaml").exists()
    listening_before = listening_ports()
    up = stack.run("make", "up")
    assert f"{stack.url}/docs" in up.stdout
    # The live catalog is created from the tracked example (git ignores the live one), and the chat's too.
    assert catalog_text(stack) == (REPO / "config" / "models.example.yaml").read_text()
    assert (stack.config / "chat.yaml").read_text() == (REPO / "config" / "chat.example.yaml").read_text()
    # `make chat` (the cli container) reads it, and running it leaves the stack as it is: the first
    # `make ps` or `make add` after `make up` once recreated the gateway and orchestrator.
    started = service_containers(stack)
    read = stack.compose("--profile", "cli", "run", "--rm", "-T", "cli", "python", "-c",
                         "from cli.chat_config import default_path, load_chat_config as load; "
                         "d = load(default_path()); print(d.problem, sorted(d.presets))").stdout
    assert "None ['cat', 'concise', 'helpful', 'pirate', 'teacher', 'technical']" in read, read
    assert service_containers(stack) == started
    assert models_by_name(stack) == {}
    listing = stack.admin.get("/admin/models").json()
    assert listing["models"] == [] and listing["host"]["kind"] == "cpu"
    assert listing["available"] == ["notes.gguf", "other.gguf", "tiny.gguf"]
    # Reachable on loopback only; only the orchestrator has the Docker socket.
    info = {service: json.loads(stack.run("docker", "inspect", f"{stack.project}-{service}-1").stdout)[0]
            for service in ("gateway", "orchestrator")}
    bindings = {service: [b for port in (i["HostConfig"]["PortBindings"] or {}).values() for b in port]
                for service, i in info.items()}
    if info["gateway"]["HostConfig"]["NetworkMode"] == "host":
        # On a Linux engine the gateway shares the host's network and listens on loopback itself.
        listening = stack.run("ss", "-Hltn", f"sport = :{stack.port}").stdout.split()
        assert [a for a in listening if a.endswith(f":{stack.port}")] == [f"127.0.0.1:{stack.port}"]
        assert bindings["gateway"] == []
    else:  # Docker Desktop, or LLAMADOCK_NETWORK=bridge: the gateway is published
        assert bindings["gateway"]
    assert all(b["HostIp"] == "127.0.0.1" for found in bindings.values() for b in found)
    # The orchestrator (the Docker socket's holder) has no port on the host, published or its own: of
    # the host's listeners, the stack added the gateway's. The gateway reaches the orchestrator over
    # the Unix socket in the volume both mount, and only they mount it.
    assert bindings["orchestrator"] == [] and info["orchestrator"]["HostConfig"]["NetworkMode"] != "host"
    added = listening_ports() - listening_before  # (other processes on this machine may open some too)
    assert stack.port in added and 8081 not in added
    # In its own network namespace it listens on loopback only (the healthcheck's port).
    inside = stack.run("docker", "exec", f"{stack.project}-orchestrator-1", "cat", "/proc/net/tcp",
                       "/proc/net/tcp6", check=False).stdout
    assert listeners(inside) and all(is_loopback(address) for address, _ in listeners(inside)), inside
    socket_volume = {service: [m["Name"] for m in info[service]["Mounts"] if m["Destination"] == "/run/llamadock"]
                     for service in info}
    assert socket_volume["gateway"] == socket_volume["orchestrator"] and len(socket_volume["gateway"]) == 1
    # On the stack's network it listens on its container's loopback only: a model container cannot reach it.
    orchestrator_ip = next(iter(info["orchestrator"]["NetworkSettings"]["Networks"].values()))["IPAddress"]
    knock = stack.compose("exec", "-T", "gateway", "bash", "-c", f"exec 3<>/dev/tcp/{orchestrator_ip}/8081",
                          check=False)
    assert knock.returncode != 0
    for service, has_socket in (("gateway", False), ("orchestrator", True)):
        mounts = {m["Destination"] for m in info[service]["Mounts"]}
        assert ("/var/run/docker.sock" in mounts) == has_socket


def test_make_up_warns_when_the_upstreams_file_points_at_the_stack(stack):
    """A static model or provider on the gateway's own port would send chats back into it."""
    upstreams = stack.config / "upstreams.yaml"
    example = upstreams.read_text()
    assert "llamadock: warning" not in stack.run("make", "up").stderr  # the shipped example points at no port of ours
    upstreams.write_text(f"models:\n  loop: {{url: 'http://127.0.0.1:{stack.port}'}}\n"
                         f"providers:\n  self: {{url: 'http://localhost:{stack.port}/v1'}}\n")
    try:
        up = stack.run("make", "up")
        assert f"model 'loop' points at http://127.0.0.1:{stack.port}, which is the gateway's own port" \
            in up.stderr, up.stderr
        assert f"provider 'self' points at http://localhost:{stack.port}, which is the gateway's own port" in up.stderr
    finally:
        upstreams.write_text(example)


def test_a_provider_with_a_key_from_env_is_served_and_listed_by_ps_and_models(stack, spawn_llama):
    """A llama-server outside the stack, with --api-key, as a provider: its key goes in .env (the
    gateway's environment), its models are listed with their provider by `make ps` / `make models`."""
    mode = json.loads(stack.run("docker", "inspect", f"{stack.project}-gateway-1").stdout)[0]["HostConfig"]["NetworkMode"]
    assert mode == "host", "this test reaches a host llama-server on 127.0.0.1: it needs the host network (Linux)"
    key = "e2e-provider-key-7"
    solo = spawn_llama("tiny-a", alias="e2e-tiny", extra_args=["--api-key", key])
    upstreams, env_file = stack.config / "upstreams.yaml", REPO / ".env"
    example, env_text = upstreams.read_text(), env_file.read_text() if env_file.exists() else None
    env_file.write_text((env_text or "").rstrip("\n") + f"\nE2E_PROVIDER_KEY={key}\n")
    upstreams.write_text(f"providers:\n  host: {{url: 'http://127.0.0.1:{solo.port}/v1', "
                         "api_key_env: E2E_PROVIDER_KEY, refresh_s: 0.5}\n")
    try:
        stack.run("make", "up")  # the gateway is recreated with the new .env
        wait_until(lambda: "host:e2e-tiny" in models_by_name(stack), timeout=30, what="the provider's model")
        client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        for name in ("host:e2e-tiny", "e2e-tiny"):
            reply = client.chat.completions.create(model=name, messages=CHAT, max_tokens=4)
            assert reply.model == "e2e-tiny" and reply.choices[0].message.content is not None
        ps = stack.run("make", "ps").stdout
        header = next(line for line in ps.splitlines() if line.startswith("NAME"))
        assert "PROVIDER" in header
        assert any(line.startswith("host:e2e-tiny") and " host " in line for line in ps.splitlines()), ps
        assert "provider host" in stack.run("make", "models").stdout
        for text in (httpx.get(stack.url + "/status", timeout=10).text, stack.compose("logs", "gateway").stdout):
            assert key not in text
    finally:
        upstreams.write_text(example)
        if env_text is None:
            env_file.unlink()
        else:
            env_file.write_text(env_text)


def test_admin_endpoints_need_the_token(stack):
    assert httpx.get(stack.url + "/admin/models", timeout=10).status_code == 401
    wrong = httpx.post(stack.url + "/admin/models", json={"name": "x", "model": "tiny.gguf"},
                       headers={"authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_admin_token"
    assert stack.model_containers() == []


@pytest.mark.parametrize("spec, status, words", [
    ({"name": "x", "model": "missing.gguf"}, 400, "does not exist in models/"),
    ({"name": "x", "model": "notes.gguf"}, 400, "not a GGUF file"),
    ({"name": "x", "model": "../config/models.yaml"}, 400, "inside models/"),
    ({"name": "x", "model": "/etc/passwd"}, 400, "relative to models/"),
    ({"name": "Bad Name", "model": "tiny.gguf"}, 400, "name"),
    ({"name": "x", "model": "tiny.gguf", "args": ["--port", "1"]}, 400, "managed by llamadock"),
    ({"name": "x"}, 400, "exactly one source"),
])
def test_bad_adds_get_clear_errors_and_leave_nothing(stack, spec, status, words):
    before = catalog_text(stack)
    response = stack.admin.post("/admin/models", json=spec)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] and error["type"] == "invalid_request_error"
    assert stack.model_containers() == []
    assert catalog_text(stack) == before


def test_make_add_starts_a_routable_model(stack, client):
    added = stack.run("make", "add", "NAME=tiny", "MODEL=tiny.gguf", "PARALLEL=2", "CTX=4096", "ALIASES=gpt-4o-mini")
    assert "tiny is ready" in added.stdout, added.stdout
    (container,) = stack.model_containers()
    assert container["Name"] == f"/{stack.project}-model-tiny"
    assert container["HostConfig"]["PortBindings"] in (None, {})
    assert container["HostConfig"]["Privileged"] is False
    assert "tiny:" in catalog_text(stack) and "gpt-4o-mini" in catalog_text(stack)
    assert "# Example: a small model" in catalog_text(stack)  # the user's comments survive
    assert models_by_name(stack)["tiny"]["state"] == "ready"

    answer = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=16, temperature=0)
    assert answer.model == "tiny" and answer.usage.completion_tokens == 16
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="gpt-4o-mini", messages=CHAT, max_tokens=16, temperature=0, stream=True) if c.choices]
    assert "".join(pieces) == answer.choices[0].message.content  # same greedy answer, streamed, via the alias


def test_adding_the_same_model_again_is_a_no_op(stack):
    again = stack.admin.post("/admin/models", json={"name": "tiny", "model": "tiny.gguf", "parallel": 2,
                                                     "ctx_size": 4096, "aliases": ["gpt-4o-mini"]})
    assert again.status_code == 200 and again.json()["model"]["state"] == "ready" and not again.json()["created"]
    clash = stack.admin.post("/admin/models", json={"name": "tiny", "model": "other.gguf"})
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "model_exists"
    alias_clash = stack.admin.post("/admin/models", json={"name": "b", "model": "other.gguf",
                                                          "aliases": ["GPT-4o-mini"]})
    assert alias_clash.status_code == 409 and "gpt-4o-mini" in alias_clash.json()["error"]["message"].lower()
    assert len(stack.model_containers()) == 1


def test_ten_concurrent_adds_give_one_container(stack):
    spec = {"name": "twin", "model": "other.gguf"}
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        codes = sorted(pool.map(lambda _: stack.admin.post("/admin/models", json=spec).status_code, range(10)))
    assert codes == [200] * 9 + [201]
    twins = [c for c in stack.model_containers() if c["Config"]["Labels"]["io.llamadock.model"] == "twin"]
    assert len(twins) == 1
    assert stack.admin.delete("/admin/models/twin").status_code == 200


def test_compose_logs_show_each_models_load_and_one_line_per_request(stack, client):
    def compose_logs() -> list[str]:
        # Plain `docker compose logs`, no service named: what `make logs` follows.
        return stack.compose("logs", "--no-color").stdout.splitlines()

    # The model's load is copied into the orchestrator's log, prefixed with its name.
    assert any("tiny | " in line and "listening on http" in line for line in compose_logs())
    client.completions.create(model="tiny", prompt="log me", max_tokens=4)
    activity = wait_until(lambda: [line for line in compose_logs() if "llamadock.activity" in line
                                   and "model=tiny" in line and "endpoint=completions" in line], 30,
                          "the request's activity line in docker compose logs", every=0.5)
    assert "status=200" in activity[-1] and "out=4" in activity[-1], activity[-1]
    # llama-server's own lines per request stay in the model's log, not copied a second time.
    assert "print_timing" in stack.admin.get("/admin/models/tiny/logs", params={"tail": 200}).text
    assert not [line for line in compose_logs() if "tiny | " in line and "print_timing" in line]
    # Nor is any health probe or access line there at the default level.
    assert not [line for line in compose_logs() if "GET /health" in line or "HTTP Request:" in line]


def test_admin_activity_lists_requests_newest_first(stack, client):
    assert httpx.get(stack.url + "/admin/activity", timeout=10).status_code == 401
    client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=5, stream=False)
    pieces = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=6, stream=True,
                                                 stream_options={"include_usage": True}))
    assert pieces
    records = stack.admin.get("/admin/activity", params={"model": "tiny", "limit": 2}).json()["records"]
    streamed, whole = records
    assert (streamed["stream"], streamed["tokens_out"], whole["stream"], whole["tokens_out"]) == (True, 6, False, 5)
    assert streamed["tokens_in"] == whole["tokens_in"] > 0 and streamed["ttft_s"] > 0
    assert streamed["status"] == 200 and streamed["dialect"] == "openai" and not streamed["kv_cache_restored"]
    assert stack.admin.get("/admin/activity", params={"model": "nope"}).json()["records"] == []


def test_admin_logs_endpoint(stack):
    tail = stack.admin.get("/admin/models/tiny/logs", params={"tail": 20})
    assert tail.status_code == 200 and tail.text.strip()
    assert stack.admin.get("/admin/models/nope/logs").status_code == 404


def metrics_of(stack: Stack, name: str) -> dict[tuple, float]:
    text = httpx.get(stack.url + "/metrics", timeout=10).text
    return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name}


def test_metrics_serve_the_models_own_llama_server_series_with_a_model_label(stack, client):
    client.completions.create(model="tiny", prompt="count me", max_tokens=4)
    predicted = metrics_of(stack, "llamacpp:tokens_predicted_total")
    assert predicted[(("model", "tiny"),)] >= 4
    assert (("model", "tiny"),) in metrics_of(stack, "llamacpp:requests_deferred")


def test_state_survives_restarting_orchestrator_and_gateway(stack, client):
    (before,) = [c["Id"] for c in stack.model_containers()]
    stack.compose("restart", "orchestrator", "gateway")
    wait_until(lambda: models_by_name(stack).get("tiny", {}).get("state") == "ready", 60, "tiny routable again")
    answer = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4)
    assert answer.choices[0].message.content is not None
    assert [c["Id"] for c in stack.model_containers()] == [before]  # adopted, not recreated


def test_killed_model_is_reported_then_started_again_on_demand(stack, client):
    (container,) = stack.model_containers()
    stack.run("docker", "kill", container["Id"])
    state = wait_until(lambda: (m := models_by_name(stack)["tiny"])["state"] != "ready" and m, 30,
                     "the gateway to see the model down")
    assert state["state"] == "failed" and "137" in state["reason"]
    # The next request starts it again (the scheduler's on-demand start) and is served.
    assert client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4).choices
    assert models_by_name(stack)["tiny"]["state"] == "ready"
    restarted = stack.admin.post("/admin/models/tiny/restart")
    assert restarted.status_code == 200 and restarted.json()["state"] == "ready"
    wait_until(lambda: models_by_name(stack)["tiny"]["state"] == "ready", 30, "the gateway to see it ready")
    assert client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4).choices


def test_a_killed_model_is_counted_as_a_crash(stack):
    assert metrics_of(stack, "llamadock_evictions_total")[(("model", "tiny"), ("reason", "crash"))] >= 1


def test_remove_model(stack, client):
    removed = stack.run("make", "rm", "NAME=tiny")
    assert "Removed tiny" in removed.stdout
    assert stack.model_containers() == []
    assert "tiny:" not in catalog_text(stack)
    wait_until(lambda: "tiny" not in models_by_name(stack), 10, "the gateway to forget tiny")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4)
    assert stack.admin.delete("/admin/models/tiny").status_code == 404


def one_off_containers(stack: Stack) -> list[str]:
    return stack.run("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.project}",
                     "--filter", "label=com.docker.compose.oneoff=True").stdout.split()


def test_make_down_leaves_nothing(stack):
    stack.admin.post("/admin/models", json={"name": "left-running", "model": "other.gguf"}).raise_for_status()
    assert stack.model_containers()
    # A `make chat` whose terminal was closed while it started: its one-off container runs on.
    stack.compose("--profile", "cli", "run", "-d", "cli", "sleep", "600")
    assert one_off_containers(stack)
    stack.run("make", "down")
    assert stack.leftovers() == []


def test_make_down_fails_loudly_when_something_of_ours_is_left(stack):
    stack.run("make", "up")
    network = f"{stack.project}_default"
    # A container that is not ours holds the stack's network: down cannot remove it, and says so.
    holder = f"{stack.project}-holder"
    image = stack.env.get("LLAMADOCK_APP_IMAGE", "llamadock/app:dev")
    stack.run("docker", "run", "-d", "--name", holder, "--network", network, image, "sleep", "600")
    try:
        down = stack.run("make", "down", check=False)
        assert down.returncode != 0
        assert f"network {network} (in use by: {holder})" in down.stderr, down.stderr
    finally:
        stack.run("docker", "rm", "-f", holder, check=False)
    stack.run("make", "down")
    assert stack.leftovers() == []
