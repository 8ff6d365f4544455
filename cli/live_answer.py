"""The answer being streamed, as a rich renderable that stays cheap however long it gets.

Markdown blocks that can no longer change (a blank line outside a code fence, with the
next block already begun) are printed once, above the live area; the live area renders
only the open block, cut to the terminal's height. A refresh then costs about one
screenful, whether the answer has 50 tokens or 50,000. When the answer ends, the live
area is rendered whole.
"""

from __future__ import annotations

import re

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.markdown import Markdown
from rich.segment import Segment
from rich.text import Text

FENCE_RE = re.compile(r" {0,3}(`{3,}|~{3,})")

# Control characters a model may emit would move the cursor or change colours (ESC,
# C1's CSI): shown as U+FFFD. Unicode line separators become newlines, which is what
# they mean and what the terminal and rich agree on the width of.
_DISPLAY_TABLE = {**{c: "\ufffd" for c in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0))},
                  0x2028: "\n", 0x2029: "\n"}


def displayable(text: str) -> str:
    return text.translate(_DISPLAY_TABLE)


def _closes(line: str, fence: str) -> bool:
    match = FENCE_RE.match(line)
    return bool(match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence)
                and not line[match.end():].strip())


def settled_length(text: str) -> int:
    """How many leading characters of ``text`` form finished Markdown blocks (0: none yet)."""
    lines = text.split("\n")
    fence: str | None = None
    offset = cut = 0
    for index, line in enumerate(lines[:-1]):  # the last line is still being written
        next_offset = offset + len(line) + 1
        if fence is not None:
            if _closes(line, fence):
                fence = None
        elif match := FENCE_RE.match(line):
            fence = match.group(1)
        elif not line.strip():
            following = lines[index + 1]
            # An indented line could continue a list item or be code: wait for an unindented one.
            if following and not following[0].isspace():
                cut = next_offset
        offset = next_offset
    return cut


def open_fence(text: str) -> str | None:
    """The opening line of the code fence still open at the end of ``text`` (e.g. "```python")."""
    fence: str | None = None
    opener: str | None = None
    for line in text.split("\n"):
        if fence is not None:
            if _closes(line, fence):
                fence = opener = None
        elif match := FENCE_RE.match(line):
            fence, opener = match.group(1), line.strip()
    return opener


def visible_tail(text: str, max_chars: int) -> str:
    """The end of ``text`` from a line start, at most about ``max_chars`` long; an open code
    fence is reopened so the tail still renders as code."""
    if len(text) <= max_chars:
        return text
    cut = text.find("\n", len(text) - max_chars)
    cut = len(text) - max_chars if cut == -1 else cut + 1
    fence = open_fence(text[:cut])
    return (fence + "\n" if fence else "") + text[cut:]


def _trimmed_lines(console: Console, renderable: RenderableType, options: ConsoleOptions) -> list[list[Segment]]:
    """Rendered lines without leading or trailing blank ones (rich's Markdown elements start or
    end with one depending on their kind), so the gaps between blocks come out even."""
    lines = console.render_lines(renderable, options.update(height=None), pad=False)

    def blank(line: list[Segment]) -> bool:  # a code block's padding has a background: not blank
        return all(not segment.text.strip() and not (segment.style and segment.style.bgcolor)
                   for segment in line)

    start, end = 0, len(lines)
    while start < end and blank(lines[start]):
        start += 1
    while end > start and blank(lines[end - 1]):
        end -= 1
    return lines[start:end]


class SettledBlock:
    """Finished Markdown, printed above the live area, then one blank line."""

    def __init__(self, markdown: str) -> None:
        self.markdown = markdown

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in _trimmed_lines(console, Markdown(self.markdown), options):
            yield from line
            yield Segment.line()
        yield Segment.line()


class LiveAnswer:
    """Feed it text with ``add_content``/``add_reasoning``; print ``take_settled()`` above the Live."""

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._reasoning: list[str] = []
        self.final = False  # True: render everything (the Live's last refresh)

    @property
    def pending(self) -> str:
        return _joined(self._pending)

    @property
    def reasoning(self) -> str:
        return _joined(self._reasoning)

    def add_content(self, text: str) -> None:
        self._pending.append(displayable(text))

    def add_reasoning(self, text: str) -> None:
        self._reasoning.append(displayable(text))

    def take_settled(self) -> list[RenderableType]:
        settled: list[RenderableType] = []
        pending = self.pending
        if self._reasoning and pending:  # thinking is over once the answer starts
            settled.append(Group(Text(self.reasoning.strip("\n"), style="dim italic"), Text("")))
            self._reasoning = []
        cut = settled_length(pending)
        if cut:
            block, self._pending = pending[:cut].strip("\n"), [pending[cut:]]
            if block:
                settled.append(SettledBlock(block))
        return settled

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        pending, reasoning = self.pending, self.reasoning
        screen = max(4, console.size.height - 2)
        budget = screen * max(options.max_width, 20)  # about one screenful of characters
        parts: list[RenderableType] = []
        if reasoning:
            parts.append(Text(reasoning if self.final else reasoning[-budget:], style="dim italic"))
        if pending:
            parts.append(Markdown(pending if self.final else visible_tail(pending, budget)))
        if not parts and not self.final:
            parts.append(Text("…", style="dim"))
        lines = _trimmed_lines(console, Group(*parts), options)
        for number, line in enumerate(lines if self.final else lines[-screen:]):
            if number:
                yield Segment.line()
            yield from line


def _joined(parts: list[str]) -> str:
    if len(parts) > 1:
        parts[:] = ["".join(parts)]
    return parts[0] if parts else ""
