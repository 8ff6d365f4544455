"""Server-sent events, parsed incrementally from the raw bytes of an HTTP body.

Lines end at "\\n" only (one trailing "\\r" is dropped): ``str.splitlines`` would also
break at U+2028, U+0085 and other characters models emit inside JSON strings.
Bytes go through an incremental UTF-8 decoder, so a character split across two
reads comes out whole.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True)
class SseEvent:
    data: str
    event: str = "message"


@dataclass(frozen=True)
class SseComment:
    """A line starting with ":": keep-alives, and the gateway's notes while a request waits
    (``: llamadock: waiting for model 'x' (3 s)``, ``: loading qwen3 12.3 s``, ``: queued 3rd``)."""
    text: str  # after the colon and one space


class SseParser:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial_line = ""
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[SseEvent | SseComment]:
        lines = (self._partial_line + self._decoder.decode(chunk)).split("\n")
        self._partial_line = lines.pop()
        events: list[SseEvent | SseComment] = []
        for line in lines:
            self._take_line(line.removesuffix("\r"), events)
        return events

    def close(self) -> list[SseEvent | SseComment]:
        """The events still buffered when the body ends, even without a final blank line."""
        last_line = self._partial_line + self._decoder.decode(b"", final=True)
        self._partial_line = ""
        events: list[SseEvent | SseComment] = []
        if last_line:
            self._take_line(last_line.removesuffix("\r"), events)
        self._dispatch(events)
        return events

    def _take_line(self, line: str, events: list[SseEvent | SseComment]) -> None:
        if not line:
            self._dispatch(events)
            return
        if line.startswith(":"):
            events.append(SseComment(line[1:].removeprefix(" ")))  # at once: it is not part of an event
            return
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value

    def _dispatch(self, events: list[SseEvent | SseComment]) -> None:
        if self._data:
            events.append(SseEvent("\n".join(self._data), self._event or "message"))
        self._data, self._event = [], ""
