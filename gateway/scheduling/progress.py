"""What a waiting request is waiting for, told to its client while it waits.

Pure: ``progress(state, model, rid, now)`` reads the scheduler's state and says
what holds the request back (its model loading, a queue slot, room in memory),
with its place in the queue and an estimated wait. The relay sends it as SSE
comments (``: loading qwen3 12.3 s``, ``: queued 3rd``) and, for clients that
opt in, as ``reasoning_content`` deltas that chat UIs show as the model's thinking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from .scheduler import FREEING, HOLDS_MEMORY, Phase, State, _waiting_for, estimated_wait_s, queue_position

OPT_IN_HEADER = "x-llamadock-progress"
OPT_IN_VALUE = "reasoning"


class Kind(StrEnum):
    LOADING = "loading"  # its model is starting
    QUEUED = "queued"  # its model runs; every slot is taken
    WAITING = "waiting"  # its model cannot start yet (room, a stop under way, a swap-group rival)


@dataclass(frozen=True)
class Progress:
    kind: Kind
    text: str  # one line, e.g. "loading qwen3 12.3 s"
    model: str
    position: int  # among the model's waiters, 1-based
    queue_length: int
    estimated_wait_s: float | None
    loading_s: float | None = None  # time since its model's start began, while loading

    @property
    def key(self) -> tuple:
        """What, when it changes, is worth telling at once (not the seconds ticking by)."""
        return self.kind, self.position, self.text if self.kind is Kind.WAITING else ""


def progress(state: State, model: str, rid: int, now: float) -> Progress | None:
    """Where request ``rid`` for ``model`` stands; None when it is not waiting (admitted, refused, gone)."""
    m = state.models.get(model)
    position = queue_position(m, rid) if m is not None else None
    if position is None:
        return None
    common = dict(model=model, position=position, queue_length=len(m.queue),
                  estimated_wait_s=estimated_wait_s(m, position, now))
    if m.phase is Phase.STARTING:
        loading = max(0.0, now - m.starting_since)
        return Progress(Kind.LOADING, f"loading {model} {loading:.1f} s", loading_s=loading, **common)
    if m.phase is Phase.READY:
        return Progress(Kind.QUEUED, f"queued {ordinal(position)}", **common)
    return Progress(Kind.WAITING, _why_waiting(state, model), **common)


def _why_waiting(state: State, name: str) -> str:
    model = state.models[name]
    group = model.policy.swap_group
    rivals = [m for m in state.models.values() if group and m.name != name and m.policy.swap_group == group
              and m.phase in HOLDS_MEMORY]
    if model.phase in (Phase.STOPPED, Phase.FAILED) and rivals:
        stopping = [r.name for r in rivals if r.phase in FREEING]
        if stopping:
            return f"waiting for room: stopping {', '.join(stopping)} (swap group '{group}')"
        return f"waiting for {', '.join(r.name for r in rivals)} to be idle (swap group '{group}')"
    if model.phase in FREEING:
        return "waiting for its previous run to stop"
    why = _waiting_for(state, model)
    return why if why.startswith("waiting for") else f"waiting for room: {why}"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def sse_comment(text: str) -> bytes:
    """One SSE comment line: clients skip it, proxies see traffic, people reading the stream see why."""
    return b": " + " ".join(text.split()).encode() + b"\n\n"


def reasoning_text(p: Progress) -> str:
    """The progress as a line of the model's "thinking", for chat UIs."""
    if p.kind is Kind.LOADING:
        return f"Loading {p.model}… {p.loading_s:.0f} s\n"
    if p.kind is Kind.QUEUED:
        wait = f", about {p.estimated_wait_s:.0f} s" if p.estimated_wait_s is not None else ""
        return f"Queued {ordinal(p.position)} for {p.model}{wait}\n"
    return p.text[:1].upper() + p.text[1:] + "\n"


def reasoning_chunk(text: str, model: str, chunk_id: str, created: int) -> bytes:
    """An OpenAI chat.completion.chunk event whose delta carries ``text`` as reasoning_content."""
    chunk = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
             "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": text},
                          "finish_reason": None}]}
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"


def wants_reasoning(headers: dict[str, str] | None, query: dict[str, str] | None) -> bool:
    """Did the client opt in (header ``X-Llamadock-Progress: reasoning`` or ``?progress=reasoning``)?"""
    header = (headers or {}).get(OPT_IN_HEADER, "")
    return header.strip().lower() == OPT_IN_VALUE or (query or {}).get("progress", "").lower() == OPT_IN_VALUE
