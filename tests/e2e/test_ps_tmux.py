"""`make ps`, `llamadock ps -w` and the chat's waiting spinner in a real terminal (tmux), on a
real stack: real containers, a tiny model, a memory budget standing in for VRAM (no GPU here).

`keep` is pinned and preloaded; `lazy` starts on its first request and unloads after its ttl.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import httpx
import pytest

from support.stack import REPO, require_docker, running_stack
from support.terminal import Terminal

require_docker()
pytestmark = pytest.mark.docker

if not shutil.which("tmux"):
    if os.environ.get("LLAMADOCK_REQUIRE_DOCKER"):
        raise RuntimeError("tmux is missing but LLAMADOCK_REQUIRE_DOCKER (CI) requires these tests: "
                           "run scripts/setup-test-tools.sh")
    pytest.skip("tmux is not installed (scripts/setup-test-tools.sh installs it)", allow_module_level=True)

LONG = "a-model-whose-name-is-forty-characters-x"  # 40 characters: never cut (README)
MODELS = {
    "keep": {"model": "m.gguf", "memory": "100MiB", "pinned": True, "preload": True, "ctx_size": 1024},
    "lazy": {"model": "m.gguf", "memory": "100MiB", "ttl": 120, "ctx_size": 2048, "parallel": 2},
    "slow": {"model": "m.gguf", "memory": "100MiB"},
    LONG: {"model": "m.gguf", "memory": "100MiB"},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    with running_stack(tmp_path_factory.mktemp("ps"), tiny_models["tiny-a"], as_file="m.gguf", catalog=MODELS, env={
            "LLAMADOCK_MEMORY_BUDGET": "1GiB", "LLAMADOCK_KEEPALIVE_S": "0.2"}) as stack:
        yield stack


@pytest.fixture
def terminal(tmp_path):
    term = Terminal(tmp_path)
    yield term
    term.stop()


def row(screen: str, name: str) -> str | None:
    return next((line for line in screen.splitlines() if line.startswith(name + " ")), None)


def row_matches(term: Terminal, name: str, pattern: str):
    line = row(term.screen(), name)
    return line is not None and re.search(pattern, line)


def test_make_ps_shows_each_model_with_its_state(stack, terminal):
    # The cli container, as a user runs it.
    terminal.start(["make", "-C", str(REPO), "--no-print-directory", "ps"], stack.env)
    terminal.wait(lambda: terminal.exit_status() is not None, "make ps to end", timeout=120)
    screen = terminal.transcript()
    assert terminal.exit_status() == 0, screen
    keep = row(screen, "keep")
    assert keep and re.search(r"keep\s+ready\s+100 MiB\s+100% CPU\s+CPU\s+1024\s+1\s+0/1\s+-\s+-\s+never \(pinned\)",
                              keep), screen
    assert re.search(r"lazy\s+stopped\s+100 MiB\s+100% CPU\s+-\s+2048\s+2\s+-\s+-\s+-\s+-", row(screen, "lazy") or ""), \
        screen


def test_make_ps_in_an_80_column_terminal_shows_names_and_states_whole(stack, tmp_path):
    term = Terminal(tmp_path, width=80, height=30)
    try:
        term.start(["make", "-C", str(REPO), "--no-print-directory", "ps"], stack.env)
        term.wait(lambda: term.exit_status() is not None, "make ps to end", timeout=120)
        screen = term.transcript()
        assert term.exit_status() == 0, screen
        assert re.search(rf"^{LONG}\s+stopped\b", screen, re.M), screen
        assert re.search(r"^keep\s+ready\b", screen, re.M), screen
        assert "…" not in screen, screen
    finally:
        term.stop()


def test_make_ps_through_a_pipe_prints_every_column_whole(stack):
    out = subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "ps"], env={**stack.env, "COLUMNS": "60"},
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout  # no colours into a pipe
    header = next(line for line in out.stdout.splitlines() if line.startswith("NAME"))
    assert re.search(r"PLACEMENT\s+CONTEXT\s+SLOTS\s+RUNNING\s+QUEUED\s+SAVED\s+UNLOADS IN", header), out.stdout
    assert re.search(rf"^{LONG}\s+stopped\s+100 MiB\b", out.stdout, re.M), out.stdout
    assert "…" not in out.stdout


def test_ps_watch_follows_a_model_as_a_request_starts_it(stack, terminal):
    terminal.start([sys.executable, "-m", "cli", "ps", "-w"], {"LLAMADOCK_URL": stack.url})
    terminal.wait(lambda: row_matches(terminal, "lazy", r"\bstopped\b"), "lazy shown stopped")
    answer = httpx.post(stack.url + "/v1/chat/completions", timeout=120, json={
        "model": "lazy", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200
    # Ready, on the CPU, with its ttl counting down from 2m00s.
    line = terminal.wait(lambda: row_matches(terminal, "lazy", r"\bready\b.*\b(1m[0-5]\d|2m00)s\s*$"),
                         "lazy shown ready with its ttl counting down")
    first = line.group(1)
    terminal.wait(lambda: (m := row_matches(terminal, "lazy", r"\b(1m[0-5]\d|2m00)s\s*$")) and m.group(1) != first,
                  "the countdown to move on")
    terminal.keys("C-c")
    terminal.wait(lambda: terminal.exit_status() is not None, "ps -w to leave on Ctrl-C")
    assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.transcript()


def test_chat_spins_with_the_gateways_note_while_it_waits(stack, terminal):
    terminal.start([sys.executable, "-m", "cli", "chat", "--model", "slow"],
                   {"LLAMADOCK_URL": stack.url, "LLAMADOCK_SESSIONS_DIR": str(terminal.workdir / "sessions")})
    terminal.wait(lambda: terminal.last_line() == "slow ❯", "the chat prompt")
    terminal.type("/params max_tokens=8")  # the tiny model's words mean nothing: a short answer
    terminal.wait_for_text(r"max_tokens\s+8", "max_tokens set")
    terminal.wait(lambda: terminal.last_line() == "slow ❯", "the chat prompt again")
    # The orchestrator paused: slow's start hangs for as long as the test says, and the gateway's
    # progress comment (": loading slow N.N s") is what the spinner shows meanwhile.
    orchestrator = f"{stack.project}-orchestrator-1"
    stack.run("docker", "pause", orchestrator)
    try:
        terminal.type("hi")
        terminal.wait_for_text(r"loading slow \d+\.\d s", "the spinner's note", timeout=60)
    finally:
        stack.run("docker", "unpause", orchestrator)
    terminal.wait_for_text(r"\d+ tokens · .* total", "the answer's stats line", timeout=120)
    assert "llamadock:" not in terminal.transcript()  # the prefix is stripped; the spinner left no trace
