"""Restore or re-process: the choice made on measured figures (gateway/kvcache/choice.py)."""

from __future__ import annotations

import pytest

from gateway.kvcache.choice import MARGIN, RESTORE_FIXED_S, Figures, Saved, choose, common_prefix, learned

MB = 2**20
PROMPT = list(range(1000))


def entry(name="a", tokens=PROMPT[:800], size=100 * MB, speed=1000.0, key="k", save_s=0.0):
    return Saved(name, key, tokens, size, speed, save_s)


FAST_DISK = Figures(restore_s_per_byte=0.01 / MB)  # 100 MB in 1 s


@pytest.mark.parametrize("saved, figures, chosen, shared", [
    # 800 shared tokens at 1000 tokens/s: 0.8 s to process; 100 MB at 100 MB/s: 1.0 s to restore
    ([entry()], FAST_DISK, None, 800),
    # a tenth of the size: 0.1 s to restore, 0.8 s saved
    ([entry(size=10 * MB)], FAST_DISK, "a", 800),
    # the prompt is all in the file: its last token is processed anyway
    ([entry(tokens=PROMPT + [5000], size=10 * MB)], FAST_DISK, "a", 999),
    # nothing in common
    ([entry(tokens=[7] * 800, size=10 * MB)], FAST_DISK, None, 0),
    # another key (another model, quantization, context, cache types): never, however good
    ([entry(size=10 * MB, key="other")], FAST_DISK, None, 0),
    # two candidates: the one that saves the most time
    ([entry("short", PROMPT[:300], 1 * MB), entry("long", PROMPT[:900], 9 * MB)], FAST_DISK, "long", 900),
    # no restore measured yet: the save's own time stands in (100 MB saved in 0.2 s)
    ([entry(size=100 * MB, save_s=0.2)], Figures(), "a", 800),
    # no figure at all: no restore (nothing to decide by)
    ([entry(size=1 * MB)], Figures(), None, 800),
    ([entry(size=1 * MB, speed=None)], FAST_DISK, None, 800),
])
def test_restore_only_when_the_figures_say_it_is_faster(saved, figures, chosen, shared):
    choice = choose(saved, PROMPT, "k", figures)
    assert choice.name == chosen
    assert choice.shared == shared
    assert choice.why


def test_a_close_call_is_not_restored():
    # restoring estimated just under re-processing, but not MARGIN times under: the prompt is processed
    size = int((0.8 / MARGIN * 1.05 - RESTORE_FIXED_S) / 0.01 * MB)
    assert choose([entry(size=size)], PROMPT, "k", FAST_DISK).name is None
    size = int((0.8 / MARGIN * 0.95 - RESTORE_FIXED_S) / 0.01 * MB)
    assert choose([entry(size=size)], PROMPT, "k", FAST_DISK).name == "a"


def test_entries_the_server_holds_already_are_skipped():
    assert choose([entry(size=MB)], PROMPT, "k", FAST_DISK, skip={"a"}).name is None


def test_restores_teach_the_cost_per_byte():
    once = learned(Figures(), 0.5, 100 * MB)
    assert once.restore_s_per_byte == pytest.approx(0.005 / MB)
    twice = learned(once, 1.5, 100 * MB)
    assert twice.restore_s_per_byte == pytest.approx(0.01 / MB)
    assert learned(twice, 0.0, 100) == twice


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2]) == 2
