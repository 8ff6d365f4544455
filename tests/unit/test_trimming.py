"""Keeping a chat within the model's context: which oldest turns are left out, how much room the
answer keeps, and the server's "context exceeded" explained."""

from __future__ import annotations

import pytest

from cli.trimming import explain_context_error, reply_reserve, trim, trim_note, turns


def u(text: str) -> dict:
    return {"role": "user", "content": text}


def a(text: str) -> dict:
    return {"role": "assistant", "content": text}


def length(message: dict) -> int:
    return len(message["content"])  # one token a character, for readable tables


CONVERSATION = [u("aaaa"), a("bbbbbb"), u("cc"), a("dddd"), u("eee")]  # turns of 10, 6 and 3 tokens


@pytest.mark.parametrize("system_tokens, budget, kept_from, dropped_turns, tokens, fits", [
    (0, 100, 0, 0, 19, True),  # it all fits: nothing left out
    (0, 19, 0, 0, 19, True),  # exactly the budget
    (0, 18, 2, 1, 9, True),  # one over: the oldest whole turn goes, not just its question
    (0, 9, 2, 1, 9, True),
    (0, 8, 4, 2, 3, True),  # only the question being asked is left
    (0, 2, 4, 2, 3, False),  # the question alone is too long: sent anyway, the server says why
    (5, 14, 2, 1, 14, True),  # the system prompt always counts, and is never left out
    (5, 13, 4, 2, 8, True),
    (20, 10, 4, 2, 23, False),
])
def test_the_oldest_whole_turns_are_left_out(system_tokens, budget, kept_from, dropped_turns, tokens, fits):
    result = trim(CONVERSATION, system_tokens, length, budget)
    assert result.messages == CONVERSATION[kept_from:]
    assert (result.dropped_turns, result.dropped_messages, result.tokens, result.fits) == \
        (dropped_turns, kept_from, tokens, fits)


def test_turns_start_at_each_question():
    assert turns([a("greeting"), u("q1"), a("a1"), a("more"), u("q2")]) == \
        [[a("greeting")], [u("q1"), a("a1"), a("more")], [u("q2")]]
    assert turns([]) == []


def test_an_empty_conversation_trims_to_itself():
    assert trim([], 0, length, 10).messages == []


@pytest.mark.parametrize("window, max_tokens, reserve", [
    (4096, None, 1024), (512, None, 128), (131072, None, 1024),  # a quarter, at most 1024
    (4096, 200, 200), (512, 20000, 256),  # max_tokens, at most half the context
])
def test_room_kept_for_the_answer(window, max_tokens, reserve):
    assert reply_reserve(window, max_tokens) == reserve


def test_the_status_line_says_what_was_left_out():
    note = trim_note(trim(CONVERSATION, 0, length, 9), 512)
    assert note.startswith("Context: left the oldest 1 turn (2 messages) out to fit the model's 512-token context")


@pytest.mark.parametrize("message, explained", [
    ("request (600 tokens) exceeds the available context size (512 tokens), try increasing it", True),
    ('{"error":{"code":400,"message":"...","type":"exceed_context_size_error"}}', True),
    ("The model 'ghost' is stopped. Retry in 2 s.", False),
])
def test_context_exceeded_is_explained(message, explained):
    sentence = explain_context_error(message, 512)
    assert (sentence is not None) == explained
    if explained:
        assert "512-token context" in sentence and "/clear" in sentence
