"""Which saved conversation to restore before a request, if any: a pure decision on figures.

A restore pays for reading the whole file (checked, then loaded into the server's KV cache);
it saves processing the tokens the request shares with it. Both are measured, not assumed:

* prompt processing: the tokens per second the model's own server reported (its ``/metrics``
  counters at the time it saved the file: same model, same machine, same settings);
* restoring: seconds per byte from the restores done so far, or until there is one, from how
  long the file took to save and check (the same bytes over the same disk), plus a fixed cost
  per call.

The one with the most time saved wins, and only when restoring is clearly faster (``MARGIN``):
a restore that is a close call could end up slower than no restore, which must never happen.
Entries of another key (another model, quantization, context, cache type, args) are never
candidates. Table-tested in tests/unit/test_kvcache_choice.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

MARGIN = 1.5  # a restore must be estimated this many times faster than re-processing what it saves
RESTORE_FIXED_S = 0.005  # one call to the server, besides the bytes


@dataclass(frozen=True)
class Saved:
    """A saved conversation as the decision sees it."""
    name: str
    kv_key: str
    tokens: Sequence[int]
    size_bytes: int
    prompt_tokens_per_s: float | None  # measured by the server that saved it
    save_s: float = 0.0  # its save and check took this long


@dataclass(frozen=True)
class Figures:
    """What restoring costs, as learned from restores already done (None: none done yet)."""
    restore_s_per_byte: float | None = None


@dataclass(frozen=True)
class Choice:
    name: str | None  # the entry to restore; None: process the prompt as it is
    shared: int = 0  # tokens of the prompt the chosen entry (or the best one) holds
    restore_s: float = 0.0  # estimated
    reprocess_s: float = 0.0  # estimated, for those shared tokens
    why: str = ""


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def restore_cost_s(entry: Saved, figures: Figures) -> float | None:
    per_byte = figures.restore_s_per_byte
    if per_byte is None and entry.save_s > 0 and entry.size_bytes:
        per_byte = entry.save_s / entry.size_bytes
    if per_byte is None:
        return None
    return RESTORE_FIXED_S + per_byte * entry.size_bytes


def choose(saved: Collection[Saved], prompt: Sequence[int], kv_key: str, figures: Figures,
           skip: Collection[str] = ()) -> Choice:
    """The entry to restore before ``prompt`` is processed by a server whose key is ``kv_key``;
    ``skip``: entries the server holds already (restored in this run)."""
    best: Choice | None = None
    closest = Choice(None, why="no saved conversation shares a prefix with this prompt")
    for entry in saved:
        if entry.kv_key != kv_key or entry.name in skip:
            continue
        # llama-server evaluates at least the prompt's last token again, whatever its cache holds.
        shared = min(common_prefix(entry.tokens, prompt), len(prompt) - 1)
        if shared <= 0:
            continue
        restore_s = restore_cost_s(entry, figures)
        speed = entry.prompt_tokens_per_s
        if restore_s is None or not speed:
            if shared > closest.shared:
                closest = Choice(None, shared, why="no measured figures to decide by")
            continue
        reprocess_s = shared / speed
        if restore_s * MARGIN >= reprocess_s:
            if shared > closest.shared:
                closest = Choice(None, shared, restore_s, reprocess_s,
                                 why=f"processing {shared} tokens ({reprocess_s:.3f} s) is not slower than "
                                     f"restoring them ({restore_s:.3f} s)")
            continue
        if best is None or reprocess_s - restore_s > best.reprocess_s - best.restore_s:
            best = Choice(entry.name, shared, restore_s, reprocess_s,
                          why=f"restoring {shared} tokens ({restore_s:.3f} s) beats processing them ({reprocess_s:.3f} s)")
    return best or closest


def learned(figures: Figures, seconds: float, size_bytes: int, weight: float = 0.5) -> Figures:
    """The figures after a restore of ``size_bytes`` took ``seconds`` (a moving average)."""
    if size_bytes <= 0 or seconds <= 0:
        return figures
    per_byte = seconds / size_bytes
    old = figures.restore_s_per_byte
    return Figures(per_byte if old is None else (1 - weight) * old + weight * per_byte)
