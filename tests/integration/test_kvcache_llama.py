"""The KV cache keeper against real llama-server processes: a conversation saved from one server is
restored into the next one started on the same model, and that server then reuses its prompt
(its own ``timings.cache_n`` says how many tokens it did not process again). What must never be
restored is not: a file that was changed on disk, a file saved under another key, a file the
server refuses. A full disk stops saving; the requests are served all the same."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from pathlib import Path

import httpx
import pytest

from gateway.kvcache.files import CacheDir
from gateway.kvcache.keeper import KvKeeper
from gateway.metrics import GatewayMetrics
from support.llama import LlamaServer, make_tiny_model, vocab_path

MODEL = "tiny-a"
KEY = "key-of-tiny-a"
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex every box".split()
# About 1,500 tokens of history: enough that re-processing it is measurably slower than a restore.
HISTORY = [{"role": "user", "content": " ".join(random.Random(5).choice(WORDS) for _ in range(1200))}]


@pytest.fixture
def kv_root(tmp_path) -> Path:
    (tmp_path / "kv" / MODEL).mkdir(parents=True)
    return tmp_path / "kv"


@pytest.fixture
def server(llama_server_bin, tiny_models, kv_root, tmp_path):
    """A llama-server for tiny-a as the orchestrator runs it: one slot, its slot directory, /slots,
    /metrics (``gguf``: another model file under the same name). Stopped at the test's end."""
    spawned: list[LlamaServer] = []

    def spawn(gguf: Path | None = None, directory: Path | None = None) -> LlamaServer:
        (directory or kv_root / MODEL).mkdir(parents=True, exist_ok=True)
        made = LlamaServer(llama_server_bin, gguf or tiny_models[MODEL], parallel=1, ctx=4096, alias=MODEL,
                           log_dir=tmp_path, extra_args=["--slots", "--metrics", "--slot-save-path",
                                                         str(directory or kv_root / MODEL)])
        spawned.append(made)
        return made.start()
    yield spawn
    for made in spawned:
        made.stop()


@pytest.fixture
def keeper(kv_root):
    # Each test's connections go with its own event loop (an async fixture's loop would be another).
    return KvKeeper(CacheDir(kv_root, max_bytes=2**30, min_free_bytes=0), GatewayMetrics(),
                    client=httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_keepalive_connections=0)))


def chat(url: str, messages: list[dict]) -> dict:
    response = httpx.post(url + "/v1/chat/completions", timeout=120,
                          json={"messages": messages, "max_tokens": 8, "temperature": 0})
    response.raise_for_status()
    return response.json()


def next_turn(answer: dict) -> list[dict]:
    return HISTORY + [{"role": "assistant", "content": answer["choices"][0]["message"]["content"]},
                      {"role": "user", "content": "and what happened next?"}]


def body(messages: list[dict]) -> bytes:
    return json.dumps({"messages": messages, "max_tokens": 8, "temperature": 0}).encode()


async def saved_conversation(server, keeper) -> tuple[list[dict], int]:
    """A first server answers HISTORY and is saved, then stopped; the next turn's messages and the
    prompt tokens the first server processed."""
    first = server()
    answer = chat(first.url, HISTORY)
    assert await keeper.save(MODEL, first.url, KEY) == 1
    first.stop()
    return next_turn(answer), answer["timings"]["prompt_n"]


async def test_a_saved_conversation_is_restored_into_the_next_server_and_its_prompt_reused(server, keeper):
    turn, first_prompt = await saved_conversation(server, keeper)
    [entry] = keeper.files.entries(MODEL)
    assert entry.n_tokens >= first_prompt and entry.prompt_tokens_per_s > 0

    second = server()
    restored = await keeper.before_forward(MODEL, second.url, KEY, "run-2", "/v1/chat/completions", body(turn))
    assert restored is not None and restored.shared >= first_prompt
    timings = chat(second.url, turn)["timings"]
    assert timings["cache_n"] >= first_prompt  # the history was not processed again
    assert timings["prompt_n"] < 100  # only the new turn was
    assert keeper.metrics.kv_lookups.labels(MODEL, "restored")._value.get() == 1

    # Once restored in this run it is not restored again (the server holds it).
    assert await keeper.before_forward(MODEL, second.url, KEY, "run-2", "/v1/chat/completions", body(turn)) is None

    # The control: a server that restored nothing processes the whole prompt.
    control = server(directory=keeper.files.root / "elsewhere")
    assert chat(control.url, turn)["timings"]["cache_n"] == 0


@pytest.mark.parametrize("damage", ["flip a byte", "truncate"])
async def test_a_damaged_file_is_skipped_and_removed_and_the_request_served(server, keeper, damage, caplog):
    turn, _ = await saved_conversation(server, keeper)
    [entry] = keeper.files.entries(MODEL)
    path = keeper.files.model_dir(MODEL) / entry.name
    data = bytearray(path.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0x5A
    else:
        del data[-4096:]
    path.write_bytes(bytes(data))

    second = server()
    assert await keeper.before_forward(MODEL, second.url, KEY, "run-2", "/v1/chat/completions", body(turn)) is None
    assert not path.exists() and not path.with_suffix(".json").exists()
    assert "KV cache: removing" in caplog.text
    assert keeper.metrics.kv_lookups.labels(MODEL, "failed")._value.get() == 1
    assert second.running
    assert chat(second.url, turn)["timings"]["cache_n"] == 0  # served, from scratch


async def test_a_file_saved_under_another_key_is_never_restored(server, keeper):
    """The spec changed (another context, cache type, quantization...): the orchestrator's key changed."""
    turn, _ = await saved_conversation(server, keeper)
    second = server()
    assert await keeper.before_forward(MODEL, second.url, "key-after-the-change", "run-2", "/v1/chat/completions",
                                       body(turn)) is None
    assert chat(second.url, turn)["timings"]["cache_n"] == 0
    assert len(keeper.files.entries(MODEL)) == 1  # kept for the spec it fits, should it come back


async def test_a_file_the_server_refuses_costs_the_file_and_nothing_else(server, keeper, llama_server_bin, tmp_path):
    """Saved under the right key by mistake, from a model of another shape: llama-server refuses it."""
    turn, _ = await saved_conversation(server, keeper)
    wider = make_tiny_model(tmp_path / "wider.gguf", name="wider", seed=3, vocab=vocab_path(llama_server_bin),
                            n_embd=128, n_head=4, n_head_kv=4)
    other = server(wider)
    assert await keeper.before_forward(MODEL, other.url, KEY, "run-2", "/v1/chat/completions", body(turn)) is None
    assert keeper.files.entries(MODEL) == []
    assert other.running and chat(other.url, turn)["choices"]


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB filesystem for the model's slots (a tmpfs; needs root, as CI has)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


async def test_a_full_disk_stops_saving_and_serving_goes_on(server, full_disk, caplog):
    (full_disk / MODEL).mkdir()
    keeper = KvKeeper(CacheDir(full_disk, max_bytes=2**30, min_free_bytes=0), GatewayMetrics())
    first = server(directory=full_disk / MODEL)
    chat(first.url, HISTORY)  # about 0.8 MiB of KV state: more than the disk's room once filled
    (full_disk / "filler").write_bytes(b"\0" * (900 * 1024))
    assert await keeper.save(MODEL, first.url, KEY) == 0
    assert list((full_disk / MODEL).iterdir()) == []  # nothing half-written left
    assert "was not saved" in caplog.text
    assert chat(first.url, HISTORY)["choices"]  # the server goes on serving
    # With the floor set, the full disk is seen before llama-server is asked to write at all.
    floored = KvKeeper(CacheDir(full_disk, max_bytes=2**30, min_free_bytes=512 * 1024), GatewayMetrics())
    assert await floored.save(MODEL, first.url, KEY) == 0
    assert "nearly full" in caplog.text
    await keeper.close()
    await floored.close()


async def test_two_conversations_of_one_model_come_back_into_two_slots(keeper, llama_server_bin, tiny_models,
                                                                      kv_root, tmp_path):
    """Two slots, two conversations: both saved, and each restored into its own slot of the next server."""
    def two_slots() -> LlamaServer:
        return LlamaServer(llama_server_bin, tiny_models[MODEL], parallel=2, ctx=8192, alias=MODEL, log_dir=tmp_path,
                           extra_args=["--slots", "--metrics", "--slot-save-path", str(kv_root / MODEL)]).start()

    other = [{"role": "user", "content": " ".join(random.Random(9).choice(WORDS) for _ in range(1200))}]
    first = two_slots()
    try:
        # at once, so that each takes its own slot
        async with httpx.AsyncClient(timeout=120) as client:
            answers = await asyncio.gather(*(client.post(first.url + "/v1/chat/completions", json={
                "messages": m, "max_tokens": 8, "temperature": 0}) for m in (HISTORY, other)))
        assert await keeper.save(MODEL, first.url, KEY) == 2
    finally:
        first.stop()
    second = two_slots()
    try:
        turns = []
        for messages, answer in zip((HISTORY, other), answers):
            said = answer.json()["choices"][0]["message"]["content"]
            turns.append(messages + [{"role": "assistant", "content": said}, {"role": "user", "content": "more?"}])
        for turn in turns:
            assert await keeper.before_forward(MODEL, second.url, KEY, "run-2", "/v1/chat/completions",
                                               body(turn)) is not None
        for turn in turns:
            assert chat(second.url, turn)["timings"]["cache_n"] > 1000
    finally:
        second.stop()
