"""`llamadock chat` in a real terminal (tmux), against the real gateway and real llama-servers.

Each test starts the chat in a detached 200x50 tmux session on a tmux server of its own,
types with `send-keys`, and reads the screen with `capture-pane`, waiting on what appears
(never on time). The tiny models write random Unicode at 1-2k tokens/s, so the tests check
the structure of the output (prompt, stats line, messages), not its words.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from support.gateway import GatewayProcess, write_upstreams
from support.llama import LlamaServer
from support.net import free_port
from support.terminal import WAIT_S, Terminal
from support.waiting import wait_until

if not shutil.which("tmux"):
    if os.environ.get("LLAMADOCK_REQUIRE_DOCKER"):
        raise RuntimeError("tmux is missing but LLAMADOCK_REQUIRE_DOCKER (CI) requires these tests: "
                           "run scripts/setup-test-tools.sh")
    pytest.skip("tmux is not installed (scripts/setup-test-tools.sh installs it)", allow_module_level=True)

STATS_RE = re.compile(r"\d+ tokens · \d+\.\d tok/s · TTFT \d+(\.\d+)? m?s · ")
STOPPED_RE = re.compile(r"^stopped · ~\d+ tokens", re.M)


class Chat:
    """The chat client running in a Terminal, with helpers that wait for it to answer."""

    def __init__(self, terminal: Terminal, model: str) -> None:
        self.term, self.model = terminal, model

    def prompt_is_back(self) -> bool:
        return self.term.last_line() == f"{self.model} ❯"

    def wait_for_prompt(self, timeout: float = WAIT_S) -> None:
        self.term.wait(self.prompt_is_back, f"the '{self.model} ❯' prompt", timeout)

    def run(self, line: str, expect: str | re.Pattern, timeout: float = WAIT_S) -> str:
        """Type ``line``; wait until ``expect`` appears once more than before and the prompt is back."""
        regex = re.compile(expect) if isinstance(expect, str) else expect
        before = len(regex.findall(self.term.transcript()))
        self.term.type(line)
        self.term.wait(lambda: len(regex.findall(self.term.transcript())) > before and self.prompt_is_back(),
                       f"/{regex.pattern}/ after typing {line!r}", timeout)
        return self.term.transcript()

    def say(self, text: str, timeout: float = WAIT_S) -> str:
        """Send a message and wait for its answer's stats line."""
        return self.run(text, STATS_RE, timeout)


def slots_busy(server: LlamaServer) -> bool:
    return any(slot.get("is_processing") for slot in httpx.get(f"{server.url}/slots", timeout=5).json())


# --- fixtures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def long_server(llama_server_bin, tiny_models, tmp_path_factory) -> Iterator[LlamaServer]:
    """tiny-a with room for a long answer: the shared upstreams stop after ~1000 tokens
    (1024 per slot), too soon to press Ctrl-C in the middle of one."""
    server = LlamaServer(llama_server_bin, tiny_models["tiny-a"], alias="tiny-long", ctx=32768, parallel=1,
                         log_dir=tmp_path_factory.mktemp("long-server"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def small_server(llama_server_bin, tiny_models, tmp_path_factory) -> Iterator[LlamaServer]:
    """tiny-b with a 512-token context: a few turns outgrow it."""
    server = LlamaServer(llama_server_bin, tiny_models["tiny-b"], alias="tiny-512", ctx=512, parallel=1,
                         log_dir=tmp_path_factory.mktemp("small-server"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def upstreams_file(upstreams, long_server, small_server, tmp_path_factory) -> Path:
    return write_upstreams(tmp_path_factory.mktemp("cli-gw") / "upstreams.yaml", {
        "tiny-a": {"url": upstreams["tiny-a"].url, "aliases": ["gpt-4o-mini"]},
        "tiny-b": {"url": upstreams["tiny-b"].url},
        "tiny-long": {"url": long_server.url},
        "tiny-512": {"url": small_server.url},
        "ghost": {"url": f"http://127.0.0.1:{free_port()}"},  # declared, nothing listening: never ready
    })


@pytest.fixture(scope="module")
def gateway(upstreams_file) -> Iterator[GatewayProcess]:
    with GatewayProcess(upstreams_file) as gw:
        def all_probed() -> bool:
            states = {m["id"]: m["state"] for m in httpx.get(f"{gw.url}/v1/models", timeout=5).json()["data"]}
            return all(states.get(name) == "ready" for name in ("tiny-a", "tiny-b", "tiny-long", "tiny-512")) \
                and states.get("ghost") != "starting"
        wait_until(all_probed, WAIT_S, "the gateway to see the models ready", detail=gw.log_text)
        yield gw


@pytest.fixture
def sessions_dir(tmp_path) -> Path:
    return tmp_path / "sessions"


@pytest.fixture
def start_chat(gateway, sessions_dir, tmp_path):
    terminals: list[Terminal] = []

    def start(*args: str, model: str = "tiny-a", env: dict[str, str] | None = None) -> Chat:
        workdir = tmp_path / f"term{len(terminals)}"
        workdir.mkdir()
        terminal = Terminal(workdir)
        terminals.append(terminal)
        terminal.start([sys.executable, "-m", "cli", "chat", *args],
                       {"LLAMADOCK_URL": gateway.url, "LLAMADOCK_SESSIONS_DIR": str(sessions_dir), **(env or {})})
        return Chat(terminal, model)

    yield start
    for terminal in terminals:
        terminal.stop()


@pytest.fixture
def chat(start_chat) -> Chat:
    chat = start_chat("--model", "tiny-a")
    chat.wait_for_prompt()
    return chat


# --- tests ---------------------------------------------------------------------------------

def test_an_answer_streams_and_ends_with_a_stats_line(chat):
    transcript = chat.say("Hello there, how are you?")
    before_stats = transcript[:STATS_RE.search(transcript).start()]
    answer = before_stats.split("tiny-a ❯ Hello there, how are you?", 1)[1]
    assert answer.strip(), "the answer's text appears between the question and the stats line"
    assert "Traceback" not in transcript


def test_status_shows_the_models_and_the_gpu(chat, gateway):
    transcript = chat.run("/status", r"tiny-long")
    assert re.search(r"tiny-a ●\s*│ ready\s*│ gpt-4o-mini", transcript), "the current model is marked"
    assert re.search(r"tiny-b\s*│ ready", transcript) and re.search(r"ghost\s*│ (stopped|failed)", transcript)
    if httpx.get(f"{gateway.url}/gpu", timeout=5).json()["available"]:
        assert "GPUs" in transcript and "%" in transcript
    else:
        assert re.search(r"^No GPU: .+\. Models run on the CPU\.$", transcript, re.M)


def test_save_list_and_load_a_session(chat, sessions_dir):
    chat.run("/params max_tokens=32", r"max_tokens\s+32\s")  # two exchanges must fit the slot's context
    chat.say("Remember this")
    chat.run("/save first", r"Saved session 'first' \(2 messages\)")
    saved = json.loads((sessions_dir / "first.json").read_text())
    assert saved["model"] == "tiny-a" and [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert saved["messages"][0]["content"] == "Remember this" and saved["params"] == {"max_tokens": 32}

    chat.run("/clear", "Conversation cleared")
    chat.run("/sessions", r"first\s*│ tiny-a\s*│ 2\s*│")
    chat.run("/load first", r"Loaded session 'first': 2 messages with tiny-a")
    chat.say("And now?")
    chat.run("/save", r"Saved session 'first' \(4 messages\)")
    assert len(json.loads((sessions_dir / "first.json").read_text())["messages"]) == 4


def test_bad_session_names_and_damaged_files_are_one_sentence(chat, sessions_dir):
    chat.run("/save ../outside", r"'\.\./outside' is not a valid session name")
    sessions_dir.mkdir(parents=True, exist_ok=True)
    (sessions_dir / "broken.json").write_text("{ this is not json")
    transcript = chat.run("/load broken", r"broken\.json is damaged \(not valid JSON")
    assert "Traceback" not in transcript
    assert not (sessions_dir.parent / "outside.json").exists()


def test_ctrl_c_stops_a_long_answer_and_the_chat_goes_on(start_chat, long_server):
    chat = start_chat("--model", "tiny-long", model="tiny-long")
    chat.wait_for_prompt()
    chat.run("/params max_tokens=20000", r"max_tokens\s+20000")
    chat.term.type("Tell me everything you know")
    chat.term.wait(lambda: slots_busy(long_server), "llama-server to start generating")
    chat.term.wait(lambda: len(chat.term.screen().split("tiny-long ❯ Tell me everything you know", 1)[-1].strip())
                   > 200, "the answer to stream onto the screen")

    chat.term.keys("C-c")
    chat.term.wait_for_text(STOPPED_RE, "the 'stopped' stats line")
    chat.wait_for_prompt()
    # Closing the stream made the gateway drop its upstream connection, and llama-server stop.
    chat.term.wait(lambda: not slots_busy(long_server), "llama-server's slot to be free again", timeout=5)
    assert chat.term.exit_status() is None, "the chat is still running"

    chat.run("/params max_tokens=8", r"max_tokens\s+8\s")
    chat.say("Short one now")
    chat.run("/save stopped", r"Saved session 'stopped' \(4 messages\)")  # the partial answer was kept


def test_quit_leaves_and_saves_the_session(chat, sessions_dir):
    chat.say("Something worth keeping")
    chat.term.type("/quit")
    chat.term.wait(lambda: chat.term.exit_status() is not None, "the chat to exit")
    assert chat.term.exit_status() == 0
    match = chat.term.wait_for_text(r"Saved session '(chat-\d{8}-\d{6})' \(2 messages\)")
    saved = json.loads((sessions_dir / f"{match.group(1)}.json").read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]


def test_ctrl_c_twice_at_the_prompt_leaves(chat):
    chat.term.keys("C-c")
    chat.term.wait_for_text("Press Ctrl-C again or type /quit to leave.")
    chat.wait_for_prompt()
    chat.term.keys("C-c")
    chat.term.wait(lambda: chat.term.exit_status() is not None, "the chat to exit")
    assert chat.term.exit_status() == 0


def test_the_picker_offers_the_models_when_none_is_given(start_chat):
    chat = start_chat(model="tiny-b")
    chat.term.wait_for_text(r"Pick a model \(number or name\) ❯")
    transcript = chat.term.transcript()
    assert re.search(r"\d │ tiny-a\s*│ ready", transcript) and re.search(r"ghost\s*│ (stopped|failed)", transcript)
    chat.term.type("9")
    chat.term.wait_for_text(r"Pick a number from 1 to \d")
    chat.term.type("tiny-b")
    chat.wait_for_prompt()
    chat.say("Hi b")


def test_api_errors_are_one_sentence(chat):
    chat.run("/model nope", r"The model 'nope' does not exist\. Available models: .*tiny-a.*\.")
    chat.model = "ghost"  # the prompt it will wait for
    chat.run("/model ghost", r"ghost is (stopped|failed): .+; it answers once it is ready\.")
    transcript = chat.run("Are you there?", r"The model 'ghost' is (stopped|failed).*Retry in \d+ s\.")
    assert "Traceback" not in transcript and not STATS_RE.search(transcript)


def test_a_model_dying_mid_answer_is_one_red_sentence(start_chat, spawn_llama, upstreams_file, gateway):
    doomed = spawn_llama("tiny-a", alias="tiny-doomed", ctx=32768, parallel=1)
    models = {**yaml.safe_load(upstreams_file.read_text())["models"],
              "tiny-doomed": {"url": doomed.url}}
    write_upstreams(upstreams_file, models)
    try:
        def listed_ready() -> bool:
            data = httpx.get(f"{gateway.url}/v1/models", timeout=5).json()["data"]
            return any(m["id"] == "tiny-doomed" and m["state"] == "ready" for m in data)
        wait_until(listed_ready, WAIT_S, "the gateway to pick up the new model")

        chat = start_chat("--model", "tiny-doomed", model="tiny-doomed")
        chat.wait_for_prompt()
        chat.run("/params max_tokens=20000", r"max_tokens\s+20000")
        chat.term.type("Go on and on")
        chat.term.wait(lambda: slots_busy(doomed), "llama-server to start generating")
        doomed.kill()
        chat.term.wait_for_text(r"The answer broke off: .+", "the red sentence")
        chat.wait_for_prompt()
        assert "Traceback" not in chat.term.transcript()
    finally:
        models.pop("tiny-doomed")
        write_upstreams(upstreams_file, models)


TRIMMED_RE = re.compile(r"Context: left the oldest (\d+) turns? \((\d+) messages\) out to fit the model's 512-token "
                        r"context; ~(\d+) tokens sent")


def test_a_long_conversation_leaves_its_oldest_turns_out_to_fit_the_context(start_chat, small_server, sessions_dir):
    chat = start_chat("--model", "tiny-512", model="tiny-512")
    chat.wait_for_prompt()
    chat.run("/params max_tokens=48", r"max_tokens\s+48\s")
    for turn in range(12):
        transcript = chat.say(f"Question number {turn}: tell me a little more about that, please.")
        assert "Traceback" not in transcript and "exceeds the available context" not in transcript
        if TRIMMED_RE.search(transcript):
            break
    trims = TRIMMED_RE.findall(transcript)
    assert trims, "the status line said the oldest turns were left out"
    assert int(trims[-1][2]) <= 512 - 48  # what was sent leaves room for the answer
    # A few more turns: it keeps trimming, and every answer still comes.
    for turn in range(3):
        assert STATS_RE.search(chat.say(f"And another question, {turn}?").rsplit("And another question", 1)[-1])
    chat.run("/save long", r"Saved session 'long' \((\d+) messages\)")
    messages = json.loads((sessions_dir / "long.json").read_text())["messages"]
    # The whole conversation is kept and saved, though it no longer fits the model's context.
    tokens = sum(len(httpx.post(f"{small_server.url}/tokenize", json={"content": m["content"]}, timeout=10)
                     .json()["tokens"]) for m in messages)
    assert tokens > 512 and messages[0]["content"].startswith("Question number 0")
    assert (sessions_dir / "long.md").read_text().count("## You") == len(messages) // 2


def test_context_exceeded_is_explained_not_a_traceback(start_chat):
    chat = start_chat("--model", "tiny-512", model="tiny-512")
    chat.wait_for_prompt()
    transcript = chat.run(" ".join(["overflowing"] * 600),
                          r"The model's 512-token context cannot hold this question with the room its answer needs")
    assert "Traceback" not in transcript
    chat.say("Short one")  # the chat goes on


def test_chat_yaml_gives_the_presets_and_defaults_and_a_broken_one_is_named(start_chat, tmp_path):
    good = tmp_path / "chat.yaml"
    good.write_text("system: cat\nparams: {max_tokens: 12}\npresets:\n  cat: You are a grumpy but helpful cat.\n")
    chat = start_chat("--model", "tiny-a", env={"LLAMADOCK_CHAT_CONFIG": str(good)})
    chat.wait_for_prompt()
    chat.run("/system", r"System prompt \(cat preset\): You are a grumpy but helpful cat\.")
    chat.run("/params", r"max_tokens\s+12\s")
    chat.run("/system pirate", r"No preset named 'pirate': choose cat")

    broken = tmp_path / "broken.yaml"
    broken.write_text("system: [not closed\n")
    chat = start_chat("--model", "tiny-a", env={"LLAMADOCK_CHAT_CONFIG": str(broken)})
    chat.term.wait_for_text(r"broken\.yaml was not used \(line \d+: not valid YAML.*\): using the built-in presets "
                            r"and defaults\.", "the sentence naming the broken file")
    chat.wait_for_prompt()
    chat.run("/system pirate", r"System prompt set to the pirate preset\.")
    assert "Traceback" not in chat.term.transcript()
