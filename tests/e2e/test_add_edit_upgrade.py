"""Day-to-day operation on the real stack (real Docker, real llama-server, a tiny GGUF), with a
memory budget that holds one tiny model at a time (no GPU here: the budget stands in for VRAM):

- `make add` goes through the scheduler: adding a second model stops the first and says so; one
  that cannot fit is refused before anything changes; every spec field is a make variable;
- `make edit NAME= FIELD=` changes one field;
- `make llama-upgrade IMAGE=` moves the models to another llama-server image under a request
  loop (not one request fails), a broken image leaves the model on its own and shows its log,
  an image that is not there changes nothing, `make llama-rollback` goes back.

The images: the local llama-server image tagged under a second name (the "new" release), and one
built FROM it whose entrypoint says so and exits 1 (a release that does not start). Both are
removed at the end.
"""

from __future__ import annotations

import subprocess
import threading
import time

import httpx
import pytest
import yaml

from support.stack import LOCAL_LLAMA_IMAGE, Stack, require_docker, running_stack

require_docker()
pytestmark = pytest.mark.docker

NEXT = "llamadock/llama-server:test-next"
BROKEN = "llamadock/llama-server:test-broken"
MODELS = {"first": {"model": "m.gguf", "memory": "100MiB"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    env = {"LLAMADOCK_MEMORY_BUDGET": "150MiB", "LLAMADOCK_MIN_RESIDENCY_S": "0"}
    with running_stack(tmp_path_factory.mktemp("ops"), tiny_models["tiny-a"], as_file="m.gguf", catalog=MODELS,
                       env=env) as stack:
        yield stack


@pytest.fixture(scope="module")
def images(stack):
    subprocess.run(["docker", "tag", LOCAL_LLAMA_IMAGE, NEXT], check=True)
    broken = (f"FROM {LOCAL_LLAMA_IMAGE}\n"
              'ENTRYPOINT ["/bin/sh", "-c", "echo llama-server: this build is broken >&2; exit 1"]\n')
    subprocess.run(["docker", "build", "-q", "-t", BROKEN, "-"], input=broken, text=True, check=True,
                   capture_output=True)
    yield
    subprocess.run(["docker", "rmi", NEXT, BROKEN], capture_output=True)


def catalog(stack: Stack) -> dict:
    return yaml.safe_load((stack.config / "models.yaml").read_text())


def running(stack: Stack) -> dict[str, str]:
    """model -> image of its running container."""
    return {c["Config"]["Labels"]["io.llamadock.model"]: c["Config"]["Image"] for c in stack.model_containers()
            if c["State"]["Running"] and c["Name"] == f"/{stack.project}-model-{c['Config']['Labels']['io.llamadock.model']}"}


def chat(stack: Stack, model: str) -> int:
    return httpx.post(stack.url + "/v1/chat/completions", timeout=120, json={
        "model": model, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}).status_code


def test_adding_a_second_model_on_a_full_budget_stops_the_first_and_says_so(stack):
    assert stack.admin.post("/admin/models/first/load").status_code == 200
    assert set(running(stack)) == {"first"}
    added = stack.run("make", "add", "NAME=second", "MODEL=m.gguf", "MEMORY=100MiB", "TTL=600", "CTX=1024",
                      "SWAP_GROUP=solo", "PARALLEL=2", "ALIASES=other-name")
    assert "Stopped to make room: first" in added.stdout and "second is ready" in added.stdout, added.stdout
    assert set(running(stack)) == {"second"}
    declared = catalog(stack)["models"]["second"]
    assert declared == {"model": "m.gguf", "memory": "100MiB", "ttl": 600, "ctx_size": 1024, "swap_group": "solo",
                        "parallel": 2, "aliases": ["other-name"]}
    assert chat(stack, "other-name") == 200


def test_an_add_that_cannot_fit_changes_nothing(stack):
    before = (stack.config / "models.yaml").read_text()
    refused = stack.run("make", "add", "NAME=huge", "MODEL=m.gguf", "MEMORY=1GiB", check=False)
    assert refused.returncode != 0 and "does not fit" in refused.stdout + refused.stderr, refused.stdout
    assert "needs 1.0 GiB in budget" in refused.stdout.replace("\n", " ") or "1024 MiB" in refused.stdout
    assert (stack.config / "models.yaml").read_text() == before and set(running(stack)) == {"second"}
    later = stack.run("make", "add", "NAME=huge", "MODEL=m.gguf", "MEMORY=1GiB", "NO_START=1")
    assert "declared" in later.stdout and "huge" in catalog(stack)["models"] and set(running(stack)) == {"second"}
    assert stack.admin.delete("/admin/models/huge").status_code == 200


def test_make_edit_changes_one_field_and_a_bad_one_is_a_400(stack):
    stack.run("make", "edit", "NAME=second", "TTL=900")
    assert catalog(stack)["models"]["second"]["ttl"] == 900
    bad = stack.admin.patch("/admin/models/second", json={"colour": "red"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "colour", bad.text
    assert catalog(stack)["models"]["second"]["ttl"] == 900


def test_an_upgrade_moves_the_running_models_without_a_failed_request(stack, images):
    # 100 + 20 MiB of 150: a second `small` fits beside it (the no-downtime way), a second
    # `second` does not (its requests wait while its server is replaced).
    stack.run("make", "add", "NAME=small", "MODEL=m.gguf", "MEMORY=20MiB")
    before = {c["Config"]["Labels"]["io.llamadock.model"]: c["Id"] for c in stack.model_containers()}
    results: list[tuple[str, int, float]] = []
    stop = threading.Event()

    def loop(model: str) -> None:
        while not stop.is_set():
            began = time.monotonic()
            results.append((model, chat(stack, model), time.monotonic() - began))

    clients = [threading.Thread(target=loop, args=(m,)) for m in ("second", "second", "small")]
    for c in clients:
        c.start()
    began = time.monotonic()
    try:
        upgraded = stack.run("make", "llama-upgrade", f"IMAGE={NEXT}")
    finally:
        took = time.monotonic() - began
        stop.set()
        for c in clients:
            c.join(60)
    assert "moved, checked to answer: second, small" in upgraded.stdout, upgraded.stdout
    assert "not running, move at their next start: first" in upgraded.stdout
    assert running(stack) == {"second": NEXT, "small": NEXT}
    after = {c["Config"]["Labels"]["io.llamadock.model"]: c["Id"] for c in stack.model_containers()}
    assert after["second"] != before["second"] and after["small"] != before["small"]
    codes = [code for _, code, _ in results]
    assert set(codes) == {200} and {m for m, _, _ in results} == {"second", "small"}, sorted(set(codes))
    for model in ("second", "small"):
        waits = [s for m, _, s in results if m == model]
        print(f"\nupgrade, {model}: {len(waits)} requests during it, all 200, longest {max(waits):.2f} s")
    print(f"the whole `make llama-upgrade`: {took:.1f} s")
    assert catalog(stack)["defaults"] == {"llama_image": NEXT, "previous_llama_image": LOCAL_LLAMA_IMAGE}
    assert NEXT in stack.run("make", "models").stdout


def test_a_broken_image_leaves_the_model_on_its_own_and_shows_why(stack, images):
    failed = stack.run("make", "llama-upgrade", f"IMAGE={BROKEN}", check=False)
    out = failed.stdout
    assert failed.returncode != 0 and "second stays on its previous image" in out, out
    assert "small stays on its previous image" in out and "this build is broken" in out
    assert running(stack) == {"second": NEXT, "small": NEXT}
    assert chat(stack, "second") == 200 and chat(stack, "small") == 200
    assert catalog(stack)["models"]["second"]["image"] == NEXT == catalog(stack)["models"]["small"]["image"]
    assert not [c for c in stack.model_containers() if "-candidate-" in c["Name"]]


def test_an_image_that_is_not_there_changes_nothing(stack):
    before = (stack.config / "models.yaml").read_text()
    missing = stack.run("make", "llama-upgrade", "IMAGE=localhost:1/llamadock/none:1", check=False)
    assert missing.returncode != 0 and "could not be pulled" in missing.stdout and "Nothing was changed" in missing.stdout
    assert (stack.config / "models.yaml").read_text() == before


def test_a_rollback_returns_to_the_previous_image(stack, images):
    back = stack.run("make", "llama-rollback")
    assert f"llama-server image: {NEXT} (was {BROKEN})" in back.stdout, back.stdout
    assert "own image, left as they are: second, small" in back.stdout  # named NEXT when BROKEN failed
    assert catalog(stack)["defaults"]["llama_image"] == NEXT and running(stack) == {"second": NEXT, "small": NEXT}
    stack.run("make", "edit", "NAME=second", "IMAGE=")  # back on the stack's image, which it already runs
    assert "image" not in catalog(stack)["models"]["second"] and running(stack)["second"] == NEXT
