"""The KV cache directory: slot files checked before they may be restored, named by key and tokens,
superseded by their continuations, capped (least recently used first), a full disk refused.

Slot files here are written in llama-server's own layout (files.py's docstring); the real server
writes and reads them in tests/integration/test_kvcache_llama.py."""

from __future__ import annotations

import json
import struct
from array import array
from pathlib import Path

import pytest

from gateway.kvcache.files import CacheDir
from gateway.kvcache.slotfile import MAGIC, STATE_VERSION, CorruptFile, read_tokens, unpack_tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def slot_file(path: Path, tokens: list[int], state: bytes = b"\x07" * 4096, packed: bool = True) -> Path:
    """A slot file as llama-server writes it: header, packed token list, then the KV state."""
    words = [-1, 1, len(tokens), *tokens, 0] if packed else list(tokens)
    path.write_bytes(struct.pack("<III", MAGIC, STATE_VERSION, len(words)) + array("i", words).tobytes() + state)
    return path


def cache(tmp_path: Path, *, max_bytes: int = 2**30, free: int = 2**40, clock=None) -> CacheDir:
    (tmp_path / "m").mkdir(exist_ok=True)
    return CacheDir(tmp_path, max_bytes=max_bytes, min_free_bytes=2**20, disk_free=lambda p: free,
                    clock=clock or Clock())


def saved(files: CacheDir, tokens: list[int], key: str = "k", model: str = "m", state: bytes = b"\x07" * 4096,
          prompts=()):
    temp = files.temp_name(key, 0)
    slot_file(files.model_dir(model) / temp, tokens, state)
    return files.adopt(model, key, temp, save_s=0.01, prompt_tokens_per_s=1000.0, prompts=prompts)


def test_tokens_are_read_from_the_header_packed_or_plain(tmp_path):
    assert list(read_tokens(slot_file(tmp_path / "a.bin", [5, 6, 7]))) == [5, 6, 7]
    assert list(read_tokens(slot_file(tmp_path / "b.bin", [5, 6, 7], packed=False))) == [5, 6, 7]


@pytest.mark.parametrize("content, why", [
    (b"", "shorter than a header"),
    (b"GGUF" + b"\0" * 20, "magic"),
    (struct.pack("<III", MAGIC, 2, 0), "state format 2"),
    (struct.pack("<III", MAGIC, STATE_VERSION, 1000) + b"\0" * 8, "beyond the file's end"),
])
def test_a_header_that_is_not_a_slot_files_is_refused(tmp_path, content, why):
    (tmp_path / "x.bin").write_bytes(content)
    with pytest.raises(CorruptFile, match=why):
        read_tokens(tmp_path / "x.bin")


def test_a_slot_holding_media_is_not_kept():
    with pytest.raises(CorruptFile, match="media"):
        unpack_tokens(array("i", [-1, 1, 2, 10, 11, 1, 0, 0]))


def test_an_adopted_file_is_named_by_key_and_tokens_with_a_sidecar_that_vouches_for_it(tmp_path):
    files = cache(tmp_path)
    entry = saved(files, [1, 2, 3])
    assert entry.name.startswith("k-") and entry.name.endswith(".bin")
    assert not list(files.model_dir("m").glob("tmp-*"))
    sidecar = json.loads((files.model_dir("m") / entry.name).with_suffix(".json").read_text())
    assert sidecar["n_tokens"] == 3 and sidecar["size_bytes"] == entry.size_bytes and sidecar["kv_key"] == "k"
    assert files.verify(entry)
    # A gateway started afresh finds it again, tokens and all.
    again = cache(tmp_path).entries("m")
    assert [(e.name, list(e.tokens), e.prompt_tokens_per_s) for e in again] == [(entry.name, [1, 2, 3], 1000.0)]


def test_a_continuation_replaces_the_conversation_it_extends_but_not_another_keys(tmp_path):
    files = cache(tmp_path)
    first = saved(files, [1, 2, 3])
    other_key = saved(files, [1, 2], key="j")
    unrelated = saved(files, [9, 9])
    longer = saved(files, [1, 2, 3, 4, 5])
    names = {e.name for e in files.entries("m")}
    assert names == {longer.name, other_key.name, unrelated.name}
    assert not (files.model_dir("m") / first.name).exists()


def test_the_next_turn_replaces_the_conversation_it_continues_but_not_one_that_shares_its_start(tmp_path):
    files = cache(tmp_path)
    system = list(range(100))
    first_prompt = system + [1000, 1001]  # a system prompt, a question
    first = saved(files, first_prompt + [500, 501, 502, 503])  # + its answer; its prompt's length not known
    assert first.prompt_tokens == 0
    # The next turn sent the answer back through the template (other tokens from there on, or none,
    # as a reasoning model's thinking): nearly all of the first in common, the same conversation.
    second_prompt = first_prompt + [600, 601, 602, 603, 604]
    second = saved(files, second_prompt + [7, 8, 9], prompts=[system[:50], second_prompt])
    assert second.prompt_tokens == len(second_prompt)
    assert {e.name for e in files.entries("m")} == {second.name}
    assert not (files.model_dir("m") / first.name).exists()
    # Another conversation after the same system prompt: both stay.
    other = saved(files, system + [2000] * 20)
    assert {e.name for e in files.entries("m")} == {second.name, other.name}
    # The third turn holds all of the second's prompt: it replaces it.
    third = saved(files, second_prompt + [70, 80, 90, 91])
    assert {e.name for e in files.entries("m")} == {third.name, other.name}


def test_a_corrupt_file_fails_its_check_and_is_removed_with_a_warning(tmp_path, caplog):
    files = cache(tmp_path)
    entry = saved(files, [1, 2, 3])
    path = files.model_dir("m") / entry.name
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one bit pattern in the KV state: the header still reads fine
    path.write_bytes(bytes(data))
    assert not files.verify(entry)
    assert not path.exists() and not path.with_suffix(".json").exists()
    assert files.entries("m") == []
    assert "checksum" in caplog.text


def test_a_truncated_file_is_dropped_when_the_directory_is_read(tmp_path, caplog):
    files = cache(tmp_path)
    entry = saved(files, [1, 2, 3])
    path = files.model_dir("m") / entry.name
    path.write_bytes(path.read_bytes()[:-10])
    assert cache(tmp_path).entries("m") == []
    assert not path.exists()
    assert "truncated" in caplog.text


def test_leftovers_of_unfinished_saves_are_swept(tmp_path):
    clock = Clock()
    files = cache(tmp_path, clock=clock)
    directory = files.model_dir("m")
    slot_file(directory / "k-orphan.bin", [1])  # no sidecar: its save never finished
    (directory / "k-lonely.json").write_text("{}")  # a sidecar without its file
    fresh = slot_file(directory / files.temp_name("k", 0), [1])  # being written right now
    clock.now = fresh.stat().st_mtime + 1
    assert files.entries("m") == []
    assert sorted(p.name for p in directory.iterdir()) == [fresh.name]
    clock.now += 600
    assert cache(tmp_path, clock=clock).entries("m") == [] and not fresh.exists()


def test_the_cap_removes_the_least_recently_used_of_any_model(tmp_path):
    clock = Clock()
    files = cache(tmp_path, clock=clock)
    (tmp_path / "n").mkdir()
    a = saved(files, [1], state=b"a" * 10_000)
    clock.now += 1
    b = saved(files, [2], model="n", state=b"b" * 10_000)
    clock.now += 1
    c = saved(files, [3], state=b"c" * 10_000)
    clock.now += 1
    files.touch(a)  # used again: now the most recent
    files.max_bytes = 2 * a.size_bytes + 100
    assert [e.name for e in files.enforce_cap()] == [b.name]
    assert {e.name for e in files.all_entries()} == {a.name, c.name}


def test_a_full_disk_or_a_slot_bigger_than_the_cap_is_refused_before_saving(tmp_path):
    assert cache(tmp_path, free=2**30).room_for(10 * 2**20) is None
    assert "nearly full" in cache(tmp_path, free=2**20 + 5).room_for(10)
    assert "cap" in cache(tmp_path, max_bytes=2**20).room_for(2 * 2**20)


def test_a_file_checked_while_its_model_starts_is_not_read_again_unless_it_changed(tmp_path, monkeypatch):
    from gateway.kvcache import files as module

    files = cache(tmp_path)
    entry = saved(files, [1, 2, 3])
    reads = []
    real = module.file_crc32
    monkeypatch.setattr(module, "file_crc32", lambda path: (reads.append(path), real(path))[1])
    files.precheck([entry])
    assert files.verify(entry) and len(reads) == 1  # the restore did not read it again
    assert files.verify(entry) and len(reads) == 2  # one-shot: later checks read it
    files.precheck([entry])
    path = files.model_dir("m") / entry.name
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))  # changed after the check: read again, and caught
    assert not files.verify(entry) and not path.exists()
