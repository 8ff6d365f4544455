"""The web console on the real stack (orchestrator, containers, scheduler): Load and Unload from
the page, with the token, change the model's state and the memory bar, live, without a reload.
No GPU here: the memory budget is the pool the bar draws."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from support.browser import Browser
from support.stack import require_docker, running_stack

require_docker()
pytestmark = pytest.mark.docker

SHOTS = Path(__file__).resolve().parents[2] / "logs" / "console"
MODELS = {"a": {"model": "m.gguf", "memory": "100MiB"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    with running_stack(tmp_path_factory.mktemp("console"), tiny_models["tiny-a"], as_file="m.gguf", catalog=MODELS,
                       env={"LLAMADOCK_MEMORY_BUDGET": "350MiB"}) as stack:
        yield stack


def phase(stack, model: str) -> str:
    return httpx.get(stack.url + "/status", timeout=10).json()["scheduler"]["models"][model]["phase"]


def test_load_and_unload_from_the_page(stack):
    row = "document.querySelector('tr[data-model=\"a\"]')"
    with Browser() as browser, browser.tab(stack.url + "/ui") as tab:
        tab.wait_for(f"({row}?.querySelector('td:nth-child(2)').textContent || '').startsWith('stopped')", timeout=60)
        assert tab.evaluate(f"{row}.querySelector('button.load').disabled")  # read-only without the token
        tab.evaluate(f"document.getElementById('token').value = {json.dumps(stack.token)};"
                     "document.getElementById('token-save').click()")
        tab.wait_for(f"document.getElementById('token-state').textContent === 'admin' && "
                     f"!{row}.querySelector('button.load').disabled")
        tab.evaluate(f"{row}.querySelector('button.load').click()")
        tab.wait_for(f"{row}.querySelector('td:nth-child(2)').textContent.startsWith('ready')", timeout=120)
        assert phase(stack, "a") == "ready"
        tab.wait_for(f"{row}.querySelector('td:nth-child(9)').textContent.includes('llama')")  # its image
        tab.screenshot(SHOTS / "stack-models-light.png")
        tab.evaluate("document.querySelector('.tab[data-view=gpu]').click()")
        tab.wait_for("document.querySelector('#pools .bar > span.ours') !== null")  # a's 100 MiB in the budget
        tab.screenshot(SHOTS / "stack-memory-light.png")
        tab.evaluate("document.querySelector('.tab[data-view=models]').click()")
        tab.evaluate(f"{row}.querySelector('button.unload').click()")
        tab.wait_for(f"{row}.querySelector('td:nth-child(2)').textContent.startsWith('stopped')", timeout=60)
        tab.wait_for("document.getElementById('notice').textContent.includes('unloaded')")
        assert phase(stack, "a") == "stopped"
        assert tab.evaluate("location.pathname") == "/ui/"


def test_a_chat_with_a_stopped_model_says_it_is_loading_then_streams(stack):
    with Browser() as browser, browser.tab(stack.url + "/ui") as tab:
        tab.wait_for("[...document.getElementById('chat-model').options].some(o => o.value === 'a')", timeout=60)
        assert phase(stack, "a") == "stopped"  # the test above unloaded it
        tab.evaluate("window.__said = []; new MutationObserver(() => window.__said.push("
                     "document.getElementById('chat-state').textContent)).observe("
                     "document.getElementById('chat-state'), {childList: true, characterData: true, subtree: true})")
        tab.evaluate("document.querySelector('.tab[data-view=playground]').click();"
                     "document.getElementById('chat-model').value = 'a';"
                     "document.getElementById('chat-input').value = 'Hello'; document.getElementById('chat-send').click()")
        tab.wait_for("document.getElementById('chat-state').textContent === 'done'", timeout=120)
        said = tab.evaluate("window.__said")
        assert any(s.startswith(("loading a", "waiting for model a")) for s in said), said  # the gateway's comments
        assert "streaming…" in said and len(tab.evaluate("document.querySelector('#chat-log .assistant').textContent")) > 0
        tab.screenshot(SHOTS / "stack-playground-light.png")


def test_a_models_log_follows_live_in_the_page(stack):
    """The Logs view reads the model container's own log through the gateway (admin token), and
    lines its server writes after the view opened arrive without a reload."""
    httpx.post(stack.url + "/v1/chat/completions", json={"model": "a", "max_tokens": 4,
               "messages": [{"role": "user", "content": "Hi"}]}, timeout=120).raise_for_status()  # a runs
    text = "document.getElementById('logs-out').textContent"
    with Browser() as browser, browser.tab(stack.url + "/ui") as tab:
        tab.evaluate(f"document.getElementById('token').value = {json.dumps(stack.token)};"
                     "document.getElementById('token-save').click()")
        tab.wait_for("document.getElementById('token-state').textContent === 'admin'")
        tab.wait_for("[...document.getElementById('logs-model').options].some(o => o.value === 'a')", timeout=60)
        tab.evaluate("document.querySelector('.tab[data-view=logs]').click();"
                     "document.getElementById('logs-model').value = 'a'; document.getElementById('logs-follow').click()")
        tab.wait_for(f"document.getElementById('logs-state').textContent === 'following' && {text}.includes('listening')",
                     timeout=30)
        before = tab.evaluate(f"{text}.length")
        httpx.post(stack.url + "/v1/chat/completions", json={"model": "a", "max_tokens": 4,
                   "messages": [{"role": "user", "content": "Hello again"}]}, timeout=120).raise_for_status()
        tab.wait_for(f"{text}.length > {before}", timeout=30)  # the request's own lines, followed live
        tab.screenshot(SHOTS / "stack-logs-light.png")


def test_add_restart_and_remove_from_the_page(stack, tiny_models):
    """The add form lists a GGUF file not yet added and adds it through the scheduler; Restart
    brings it back; Remove asks a second click, then it is gone from the catalog."""
    import shutil
    shutil.copy(tiny_models["tiny-b"], stack.models / "second.gguf")  # a file not added yet
    row = "document.querySelector('tr[data-model=\"b\"]')"
    with Browser() as browser, browser.tab(stack.url + "/ui") as tab:
        tab.evaluate(f"document.getElementById('token').value = {json.dumps(stack.token)};"
                     "document.getElementById('token-save').click()")
        tab.wait_for("[...document.getElementById('add-file').options].some(o => o.value === 'second.gguf')",
                     timeout=60)
        tab.evaluate("document.getElementById('add-name').value = 'b';"
                     "document.getElementById('add-file').value = 'second.gguf';"
                     "document.getElementById('add-send').click()")
        tab.wait_for("document.getElementById('notice').textContent.includes('b: added')", timeout=180)
        tab.wait_for(f"{row}?.querySelector('td:nth-child(2)').textContent.startsWith('ready')", timeout=60)
        started = stack.admin.get("/admin/models").json()
        before = next(m for m in started["models"] if m["name"] == "b")["instance"]["started_at"]
        tab.evaluate(f"{row}.querySelector('button.restart').click()")
        tab.wait_for("document.getElementById('notice').textContent.startsWith('b: ')"
                     " && !document.getElementById('notice').textContent.includes('…')", timeout=120)
        after = next(m for m in stack.admin.get("/admin/models").json()["models"] if m["name"] == "b")
        assert after["instance"]["started_at"] != before  # restarted, not just said so
        tab.evaluate(f"{row}.querySelector('button.remove').click()")
        tab.wait_for(f"{row}.querySelector('button.remove').textContent === 'Confirm remove'")
        tab.evaluate(f"{row}.querySelector('button.remove').click()")
        tab.wait_for("document.getElementById('notice').textContent.includes('b: removed')", timeout=60)
        tab.wait_for(f"{row} === null", timeout=30)
    assert "b" not in [m["name"] for m in stack.admin.get("/admin/models").json()["models"]]
