"""Saved slots on disk: one directory per model, a slot file and its sidecar per conversation.

llama-server writes a slot file (``POST /slots/{id}?action=save``) into the model's directory
under a temporary name; ``adopt`` checks it, names it ``<kv_key>-<digest of its tokens>.bin``
and writes the sidecar (``.json``: key, token count, size, CRC-32, when saved and last used,
and the prompt speed the server that wrote it had). A file is restored only with a sidecar
whose size and CRC-32 match it: llama-server asserts (aborts) on some malformed files, so
nothing unchecked reaches it. Whatever does not check out (no sidecar, another size, another
checksum, a header that is not a slot file's) is removed with a warning, never restored.

The cache has a size cap (least recently used files go first) and leaves a floor of free disk:
a full disk stops saving, and nothing else. The file's own layout is slotfile.py's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import threading
import time
from array import array
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from common.files import atomic_write

from .choice import common_prefix
from .slotfile import CorruptFile, file_crc32, read_tokens, tokens_digest

log = logging.getLogger("llamadock.kvcache")

SIDECAR_VERSION = 1
TEMP_PREFIX = "tmp-"
TEMP_STALE_S = 120.0  # a temporary file older than this is a save that never finished


@dataclass(frozen=True)
class Entry:
    """One saved conversation of one model."""
    model: str
    kv_key: str
    name: str  # the slot file's name in the model's directory (what llama-server is told to restore)
    tokens: array = field(repr=False, compare=False)
    size_bytes: int
    crc32: int
    saved_at: float
    last_used: float
    save_s: float = 0.0  # how long the save took (a first figure for what a restore costs)
    prompt_tokens_per_s: float | None = None  # prompt processing speed of the server that saved it
    prompt_tokens: int = 0  # how many of its tokens were the last request's prompt (0: not known)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def sidecar(self) -> dict:
        return {"version": SIDECAR_VERSION, "model": self.model, "kv_key": self.kv_key, "file": self.name,
                "n_tokens": self.n_tokens, "size_bytes": self.size_bytes, "crc32": self.crc32,
                "saved_at": self.saved_at, "last_used": self.last_used, "save_s": self.save_s,
                "prompt_tokens_per_s": self.prompt_tokens_per_s, "prompt_tokens": self.prompt_tokens}


SAME_CONVERSATION = 0.9  # without its prompt's length: this much of it in common is the same conversation


def superseded(old: Entry, tokens: array) -> bool:
    """Whether a conversation now saved as ``tokens`` holds what ``old`` is worth: all of its last
    prompt (the answer after it is what the client sends back in its next turn, through the chat
    template: other tokens, or none, as a reasoning model's thinking is dropped), or where that
    length is not known, nearly all of it. Two conversations that only share their start (a long
    system prompt) both stay."""
    if len(tokens) < len(old.tokens):
        return False
    shared = common_prefix(old.tokens, tokens)
    if old.prompt_tokens:
        return shared >= old.prompt_tokens
    return shared >= SAME_CONVERSATION * len(old.tokens)


# ---- the directory ----------------------------------------------------------------------------------

class CacheDir:
    """The KV cache root the model servers save into (each in its own directory), as the gateway sees
    it. Blocking file work: call it from a thread. ``disk_free``: bytes free where ``root`` is (a seam
    for the tests of a full disk)."""

    def __init__(self, root: Path, *, max_bytes: int, min_free_bytes: int,
                 disk_free: Callable[[Path], int] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self._disk_free = disk_free or (lambda path: shutil.disk_usage(path).free)
        self.clock = clock
        self._index: dict[str, list[Entry]] = {}  # model -> its entries, read from disk once
        self._lock = threading.RLock()  # saves and restores of different models run in threads at once
        self._prechecked: dict[str, tuple[int, int, int]] = {}  # entry -> (inode, size, mtime) checked just now

    def model_dir(self, model: str) -> Path:
        return self.root / model

    def temp_name(self, kv_key: str, slot: int) -> str:
        return f"{TEMP_PREFIX}{kv_key}-{slot}-{secrets.token_hex(4)}.bin"

    # ---- reading ----

    def entries(self, model: str) -> list[Entry]:
        with self._lock:
            if model not in self._index:
                self._index[model] = self._scan(model)
            return list(self._index[model])

    def indexed(self, model: str) -> list[Entry]:
        """The entries known in memory, without touching the disk ([] for a model not read yet)."""
        return list(self._index.get(model, ()))

    def is_indexed(self, model: str) -> bool:
        return model in self._index

    def all_entries(self) -> list[Entry]:
        models = set(self._index)
        with contextlib.suppress(OSError):
            models |= {p.name for p in self.root.iterdir() if p.is_dir()}
        return [e for m in sorted(models) for e in self.entries(m)]

    def _scan(self, model: str) -> list[Entry]:
        directory = self.model_dir(model)
        try:
            names = sorted(p.name for p in directory.iterdir())
        except OSError:
            return []
        found: list[Entry] = []
        for name in names:
            path = directory / name
            if name.startswith(TEMP_PREFIX):
                self._sweep_temp(path)
            elif name.endswith(".json"):
                entry = self._read_sidecar(model, path)
                if entry is not None:
                    found.append(entry)
            elif name.endswith(".bin") and not (directory / (name[:-4] + ".json")).exists():
                self._discard(path, None, "no sidecar (a save that did not finish)")
        return found

    def _read_sidecar(self, model: str, path: Path) -> Entry | None:
        slot = path.with_suffix(".bin")
        try:
            meta = json.loads(path.read_text())
            if meta.get("version") != SIDECAR_VERSION or meta.get("file") != slot.name:
                raise CorruptFile("sidecar of another version or file")
            tokens = read_tokens(slot)
            if len(tokens) != meta["n_tokens"]:
                raise CorruptFile("token count differs from its sidecar")
            if slot.stat().st_size != meta["size_bytes"]:
                raise CorruptFile(f"{slot.stat().st_size} bytes, its sidecar says {meta['size_bytes']} (truncated?)")
            return Entry(model=model, kv_key=str(meta["kv_key"]), name=slot.name, tokens=tokens,
                         size_bytes=int(meta["size_bytes"]), crc32=int(meta["crc32"]),
                         saved_at=float(meta["saved_at"]), last_used=float(meta["last_used"]),
                         save_s=float(meta.get("save_s") or 0.0),
                         prompt_tokens_per_s=meta.get("prompt_tokens_per_s"),
                         prompt_tokens=int(meta.get("prompt_tokens") or 0))
        except FileNotFoundError:
            self._discard(slot, path, "its slot file is missing")
        except (OSError, ValueError, KeyError, TypeError) as exc:  # CorruptFile is a ValueError
            self._discard(slot, path, str(exc))
        return None

    def _sweep_temp(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            if self.clock() - path.stat().st_mtime > TEMP_STALE_S:
                path.unlink()

    def _discard(self, slot: Path, sidecar: Path | None, why: str) -> None:
        log.warning("KV cache: removing %s: %s", slot, why)
        for path in (slot, sidecar):
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()

    # ---- checks ----

    def verify(self, entry: Entry) -> bool:
        """Whether the file is still what was saved (size and CRC-32); if not it is removed, with a warning.
        A file checked by ``precheck`` moments ago and not touched since (same inode, size, mtime) is
        not read again."""
        path = self.model_dir(entry.model) / entry.name
        try:
            stat = path.stat()
            stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            why = None if stat.st_size == entry.size_bytes else \
                f"{stat.st_size} bytes, saved as {entry.size_bytes} (truncated?)"
            if why is None and self._prechecked.pop(entry.name, None) != stamp and file_crc32(path) != entry.crc32:
                why = "its checksum differs from the one saved (corrupt)"
        except OSError as exc:
            why = f"unreadable ({exc.strerror or exc})"
        if why is None:
            return True
        self.remove(entry, why)
        return False

    def precheck(self, entries: Iterable[Entry]) -> None:
        """Check files ahead of a restore (while their model starts: the time is hidden in its load, and
        the file is in the page cache when the server reads it). One-shot: the next ``verify`` of each
        skips the read if the file is untouched; a file that fails is removed now."""
        for entry in entries:
            path = self.model_dir(entry.model) / entry.name
            try:
                stat = path.stat()
            except OSError:
                continue  # verify says why
            if self.verify(entry):
                self._prechecked[entry.name] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def room_for(self, expected_bytes: int) -> str | None:
        """Why a save of about ``expected_bytes`` must not be made now, or None when it may."""
        if expected_bytes > self.max_bytes:
            return f"it would take {expected_bytes // 2**20} MiB, more than the cache's cap"
        try:
            free = self._disk_free(self.root)
        except OSError as exc:
            return f"the disk cannot be read ({exc.strerror or exc})"
        if free - expected_bytes < self.min_free_bytes:
            return f"the disk is nearly full ({free // 2**20} MiB free, {self.min_free_bytes // 2**20} MiB kept free)"
        return None

    # ---- changes ----

    def adopt(self, model: str, kv_key: str, temp: str, *, save_s: float,
              prompt_tokens_per_s: float | None, prompts: Iterable[Sequence[int]] = ()) -> Entry | None:
        """Take a slot file llama-server just wrote under the name ``temp``: check it, name it, write its
        sidecar, drop the entries it makes redundant (``superseded``). ``prompts``: recent requests'
        prompt tokens (the longest that begins the file is its prompt). None when it does not check out."""
        directory = self.model_dir(model)
        path = directory / temp
        try:
            tokens = read_tokens(path)
            if not tokens:
                raise CorruptFile("an empty slot")
            size, crc = path.stat().st_size, file_crc32(path)
            now = self.clock()
            prompt = max((len(p) for p in prompts if len(p) <= len(tokens) and common_prefix(p, tokens) == len(p)),
                         default=0)
            entry = Entry(model=model, kv_key=kv_key, name=f"{kv_key}-{tokens_digest(tokens)}.bin", tokens=tokens,
                          size_bytes=size, crc32=crc, saved_at=now, last_used=now, save_s=save_s,
                          prompt_tokens_per_s=prompt_tokens_per_s, prompt_tokens=prompt)
            os.replace(path, directory / entry.name)
            atomic_write((directory / entry.name).with_suffix(".json"), json.dumps(entry.sidecar()))
        except (OSError, CorruptFile) as exc:
            self._discard(path, None, f"the saved slot does not check out: {exc}")
            return None
        with self._lock:
            for old in self.entries(model):
                if old.name != entry.name and old.kv_key == kv_key and superseded(old, tokens):
                    self.remove(old, None)  # the new file holds all of it (but its last answer), and more
            self._index[model] = [e for e in self.entries(model) if e.name != entry.name] + [entry]
        return entry

    def discard_temp(self, model: str, temp: str) -> None:
        """A save that failed: what it may have written (a disk that filled up mid-write)."""
        with contextlib.suppress(OSError):
            (self.model_dir(model) / temp).unlink()

    def set_save_s(self, entry: Entry, seconds: float) -> Entry:
        return self._rewrite(replace(entry, save_s=seconds))

    def touch(self, entry: Entry) -> Entry:
        """Mark it used now (what the least-recently-used cleanup reads)."""
        return self._rewrite(replace(entry, last_used=self.clock()))

    def _rewrite(self, entry: Entry) -> Entry:
        with contextlib.suppress(OSError):
            atomic_write((self.model_dir(entry.model) / entry.name).with_suffix(".json"), json.dumps(entry.sidecar()))
        with self._lock:
            self._index[entry.model] = [entry if e.name == entry.name else e for e in self.entries(entry.model)]
        return entry

    def remove(self, entry: Entry, why: str | None) -> None:
        slot = self.model_dir(entry.model) / entry.name
        if why is not None:
            self._discard(slot, slot.with_suffix(".json"), why)
        else:
            for path in (slot, slot.with_suffix(".json")):
                with contextlib.suppress(OSError):
                    path.unlink()
        with self._lock:
            if entry.model in self._index:
                self._index[entry.model] = [e for e in self._index[entry.model] if e.name != entry.name]

    def enforce_cap(self) -> list[Entry]:
        """Remove least recently used entries (any model's) until the cache is within its cap; returns them."""
        with self._lock:
            entries = sorted(self.all_entries(), key=lambda e: e.last_used)
            total = sum(e.size_bytes for e in entries)
            removed = []
            while entries and total > self.max_bytes:
                oldest = entries.pop(0)
                self.remove(oldest, None)
                total -= oldest.size_bytes
                removed.append(oldest)
            return removed


def total_bytes(entries: Iterable[Entry]) -> int:
    return sum(e.size_bytes for e in entries)
