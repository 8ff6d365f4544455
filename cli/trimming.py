"""Keeping a conversation within the model's context: which of the oldest turns to leave out of
the next request, and what to tell the user when the server says the context is exceeded.

Pure: the token count of a message is a function passed in (cli/context.py counts with the
model's own tokenizer, through the gateway, or bounds it by the text's UTF-8 bytes).

A turn is a user message and what follows it up to the next user message (the assistant's
answer). Whole turns go, oldest first; the system prompt (sent apart from the messages) and the
newest turn, the question being asked, always stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

Message = dict[str, str]

# What a chat template adds around each message (role markers, separators): ChatML, Llama 3 and
# Gemma add 4-6 tokens; counted at 16 so the estimate errs on the side of room.
MESSAGE_OVERHEAD = 16
# Room left for the answer when max_tokens is not set: a quarter of the context, at most 1024.
REPLY_SHARE, REPLY_MAX = 4, 1024


def reply_reserve(window: int, max_tokens: int | None) -> int:
    """Tokens kept free for the answer in a context of ``window`` tokens."""
    if max_tokens is not None:
        return min(max_tokens, window // 2)  # a huge max_tokens would leave no room for any question
    return min(window // REPLY_SHARE, REPLY_MAX)


def turns(messages: Sequence[Message]) -> list[list[Message]]:
    grouped: list[list[Message]] = []
    for message in messages:
        if message.get("role") == "user" or not grouped:
            grouped.append([message])
        else:
            grouped[-1].append(message)
    return grouped


@dataclass(frozen=True)
class Trimmed:
    messages: list[Message]  # what to send (the system prompt apart)
    dropped_turns: int = 0
    dropped_messages: int = 0
    tokens: int = 0  # the count of what is sent, system prompt included
    fits: bool = True  # False: even the newest turn alone is over the budget (sent anyway: the server says why)


def trim(messages: Sequence[Message], system_tokens: int, count: Callable[[Message], int], budget: int) -> Trimmed:
    """The newest whole turns whose tokens, with the system prompt's, fit ``budget``."""
    grouped = turns(messages)
    sizes = [sum(count(m) for m in turn) for turn in grouped]
    total = system_tokens + sum(sizes)
    first = 0
    while total > budget and first < len(grouped) - 1:
        total -= sizes[first]
        first += 1
    kept = [m for turn in grouped[first:] for m in turn]
    return Trimmed(kept, first, len(messages) - len(kept), total, total <= budget)


def trim_note(result: Trimmed, window: int) -> str:
    """The status line after a trim."""
    turns_word = "turn" if result.dropped_turns == 1 else "turns"
    return (f"Context: left the oldest {result.dropped_turns} {turns_word} ({result.dropped_messages} messages) "
            f"out to fit the model's {window}-token context; ~{result.tokens} tokens sent "
            "(the whole conversation is still saved by /save).")


CONTEXT_WORDS = ("exceeds the available context size", "exceed_context_size", "context length", "context size")


def explain_context_error(message: str, window: int | None) -> str | None:
    """The sentence for the server's "context exceeded" error, or None if ``message`` is another."""
    if not any(words in message.lower() for words in CONTEXT_WORDS):
        return None
    size = f"{window}-token " if window else ""
    return (f"The model's {size}context cannot hold this question with the room its answer needs (the server "
            "said: context exceeded). Send a shorter message, lower max_tokens with /params, /clear the "
            "conversation, or give the model a larger ctx_size.")
