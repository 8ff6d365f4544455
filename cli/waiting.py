"""The spinner shown while an answer has not begun: the model starting, a queue, a slow first token.

It says what the gateway says the request waits for (its SSE comments: ``loading qwen3
12.3 s``, ``queued 3rd``, ``waiting for model 'x' (3 s)``), else how long it has waited.
"""

from __future__ import annotations

from typing import Callable

from rich.console import Console, ConsoleOptions, RenderResult
from rich.spinner import Spinner
from rich.text import Text


def waiting_label(model: str, note: str | None, waited_s: float) -> str:
    return note if note else f"waiting for {model} · {waited_s:.0f} s"


class Waiting:
    """A rich renderable for a Live that refreshes itself (the spinner turns between chunks)."""

    def __init__(self, model: str, started_at: float, clock: Callable[[], float]) -> None:
        self.model, self.started_at, self.clock = model, started_at, clock
        self.note: str | None = None  # set from the stream; read by the Live's refresh thread
        self.spinner = Spinner("dots", style="cyan")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        label = waiting_label(self.model, self.note, self.clock() - self.started_at)
        self.spinner.update(text=Text(label, style="dim"))
        yield self.spinner
