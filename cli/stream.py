"""A streamed chat completion: the request, what its SSE events mean, and the answer they add up to.

Pure: times are passed in, so the statistics (tokens, tokens/s, time to first token)
are computed the same way in tests as in the chat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Union

from .sessions import Session
from .sse import SseComment, SseEvent


@dataclass(frozen=True)
class Content:
    text: str


@dataclass(frozen=True)
class Reasoning:
    text: str  # a thinking model's reasoning_content


@dataclass(frozen=True)
class Finish:
    reason: str  # "stop", "length", …


@dataclass(frozen=True)
class Usage:
    completion_tokens: int | None
    tokens_per_second: float | None = None  # llama-server's own measure ("timings"), when sent


@dataclass(frozen=True)
class Failure:
    message: str


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class Progress:
    text: str  # what the gateway says the request waits for: "loading qwen3 12.3 s", "queued 3rd"


ChatEvent = Union[Content, Reasoning, Finish, Usage, Failure, Done, Progress]

GATEWAY_PREFIX = "llamadock:"


def progress_note(comment: SseComment) -> str | None:
    """The words of a gateway note, without its "llamadock: " prefix; None for an empty keep-alive."""
    text = comment.text.strip()
    if text.startswith(GATEWAY_PREFIX):
        text = text[len(GATEWAY_PREFIX):].strip()
    return text or None


def completion_request(session: Session, start: int = 0) -> dict:
    """The request for the conversation's next answer; ``start``: the first message still sent."""
    return {
        "model": session.model,
        "messages": session.request_messages(start),
        "stream": True,
        "stream_options": {"include_usage": True},
        **session.params.body(),
    }


def chat_events(sse: SseEvent | SseComment) -> list[ChatEvent]:
    """What one SSE event of /v1/chat/completions says; unreadable data is skipped."""
    if isinstance(sse, SseComment):
        note = progress_note(sse)
        return [Progress(note)] if note else []
    if sse.data.strip() == "[DONE]":
        return [Done()]
    try:
        payload = json.loads(sse.data)
    except ValueError:
        payload = None
    if sse.event == "error" or (isinstance(payload, dict) and "error" in payload):
        return [Failure(error_message(payload, sse.data))]
    if not isinstance(payload, dict):
        return []
    events: list[ChatEvent] = []
    for choice in payload.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("reasoning_content"):
            events.append(Reasoning(delta["reasoning_content"]))
        if delta.get("content"):
            events.append(Content(delta["content"]))
        if choice.get("finish_reason"):
            events.append(Finish(choice["finish_reason"]))
    usage, timings = payload.get("usage"), payload.get("timings")
    if isinstance(usage, dict) or isinstance(timings, dict):
        usage, timings = usage or {}, timings or {}
        tokens = usage.get("completion_tokens", timings.get("predicted_n"))
        events.append(Usage(tokens if isinstance(tokens, int) else None, _number(timings.get("predicted_per_second"))))
    return events


def error_message(payload: object, raw: str) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return raw.strip() or "the gateway reported an error without a message"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class AnswerStats:
    tokens: int
    tokens_counted: bool  # True: the server's count; False: streamed chunks counted by us
    tokens_per_second: float | None
    first_token_s: float | None
    total_s: float
    stopped: bool = False
    finish_reason: str | None = None


@dataclass
class Answer:
    """An answer as it streams in; ``apply`` each event with the time it arrived."""

    started_at: float
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    last_token_at: float | None = None
    ended_at: float | None = None
    chunks: int = 0
    usage: Usage | None = None
    finish_reason: str | None = None
    error: str | None = None
    stopped: bool = False

    @property
    def text(self) -> str:
        return "".join(self.content)

    def apply(self, event: ChatEvent, now: float) -> None:
        if isinstance(event, (Content, Reasoning)):
            (self.content if isinstance(event, Content) else self.reasoning).append(event.text)
            self.chunks += 1
            if self.first_token_at is None:
                self.first_token_at = now
            self.last_token_at = now
        elif isinstance(event, Finish):
            self.finish_reason = event.reason
        elif isinstance(event, Usage):
            self.usage = event
        elif isinstance(event, Failure):
            self.error = event.message

    def stop(self, now: float) -> None:
        self.stopped = True
        self.end(now)

    def end(self, now: float) -> None:
        if self.ended_at is None:
            self.ended_at = now

    def stats(self) -> AnswerStats:
        ended = self.ended_at if self.ended_at is not None else (self.last_token_at or self.started_at)
        counted = self.usage is not None and self.usage.completion_tokens is not None
        tokens = self.usage.completion_tokens if counted else self.chunks  # type: ignore[union-attr]
        rate = self.usage.tokens_per_second if self.usage else None
        if rate is None and self.first_token_at is not None and self.last_token_at is not None:
            # tokens after the first one, over the time they took
            span = self.last_token_at - self.first_token_at
            rate = (tokens - 1) / span if tokens > 1 and span > 0 else None
        first = self.first_token_at - self.started_at if self.first_token_at is not None else None
        return AnswerStats(tokens, counted, rate, first, ended - self.started_at, self.stopped, self.finish_reason)
