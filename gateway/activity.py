"""What each request did, once: one INFO line per request and the latest records in memory for
``GET /admin/activity`` (a console reads them), from one ``ActivityRecord`` (contract/activity.py)
that the exchange fills in as it ends.

The pure parts: how a request's wait splits into queueing and loading (``split_wait``), and the
token counts read from the tail of the model's answer (``counts_from_tail``): llama-server ends
every answer, streamed or not, with its ``usage`` and ``timings``, so the relay keeps only its
last few pieces (references, no copy) and nothing is parsed while tokens flow.
"""

from __future__ import annotations

import json
import logging
import re
from collections import deque
from dataclasses import dataclass

from contract.activity import ActivityRecord

log = logging.getLogger("llamadock.activity")

TAIL_PIECES = 3  # the answer's last pieces kept: its final event (usage, timings) fits in them

_TIMINGS = re.compile(rb'"timings"\s*:\s*(\{[^{}]*\})')


def _last_int(tail: bytes, *keys: bytes) -> int | None:
    for key in keys:
        found = re.findall(rb'"' + key + rb'"\s*:\s*(\d+)', tail)
        if found:
            return int(found[-1])
    return None


@dataclass(frozen=True)
class TokenCounts:
    tokens_in: int | None = None
    tokens_out: int | None = None
    per_second: float | None = None  # the server's own generation speed


def counts_from_tail(tail: bytes) -> TokenCounts:
    """Token counts from the end of a llama-server answer (OpenAI or Anthropic shape, a stream or
    one JSON body). Keys inside generated text are escaped (``\\"usage\\"``), so never match."""
    timings: dict = {}
    matches = _TIMINGS.findall(tail)
    if matches:
        try:
            timings = json.loads(matches[-1])
        except ValueError:
            timings = {}
    tokens_in = _last_int(tail, b"prompt_tokens", b"input_tokens")
    tokens_out = _last_int(tail, b"completion_tokens", b"output_tokens")
    if tokens_in is None and isinstance(timings.get("prompt_n"), int):
        tokens_in = timings["prompt_n"] + (timings.get("cache_n") or 0)  # prompt_n counts only what was not cached
    if tokens_out is None and isinstance(timings.get("predicted_n"), int):
        tokens_out = timings["predicted_n"]
    speed = timings.get("predicted_per_second")
    return TokenCounts(tokens_in, tokens_out,
                       float(speed) if isinstance(speed, (int, float)) and not isinstance(speed, bool) else None)


def split_wait(arrived: float, settled: float, ready_since: float | None) -> tuple[float, float]:
    """(queue wait, load wait) of a request that waited from ``arrived`` until the scheduler let
    it go or refused it at ``settled``. ``ready_since``: when its model last became ready, or None
    if it was not ready then (the whole wait was for it to start, or for room to start it)."""
    waited = max(0.0, settled - arrived)
    if ready_since is None:
        return 0.0, waited
    load = min(waited, max(0.0, ready_since - arrived))  # it became ready while this one waited
    return waited - load, load


class ActivityLog:
    """The latest ``size`` records, in memory (a ring: the oldest drop out), and one log line each."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._records: deque[ActivityRecord] = deque(maxlen=size)

    def add(self, record: ActivityRecord) -> None:
        if self.size:
            self._records.append(record)
        if log.isEnabledFor(logging.INFO):
            log.info(record.line(), extra={"activity": record.model_dump(mode="json")})

    def latest(self, model: str | None = None, limit: int | None = None) -> list[ActivityRecord]:
        """Newest first; only ``model``'s when given."""
        found: list[ActivityRecord] = []
        for record in reversed(self._records):
            if model is None or record.model == model:
                found.append(record)
                if limit is not None and len(found) >= limit:
                    break
        return found
