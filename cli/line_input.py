"""Reading what the user types: line editing, history kept across runs, tab completion.

GNU readline from the standard library (every Python build we ship, the cli container
included, has it); without it, plain ``input()`` still works, only without editing.
A message of several lines starts and ends with a line holding only ``\"\"\"``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

try:
    import readline
except ImportError:  # e.g. Windows without WSL: no editing, everything else works
    readline = None  # type: ignore[assignment]

HISTORY_LENGTH = 2000
MULTILINE = '"""'


def prompt_text(label: str, style: str = "1;36", color: bool = True) -> str:
    """``label ❯ `` for ``input()``, coloured; readline must be told which bytes take no room
    (\\001…\\002), or it miscounts the prompt's width and garbles long lines."""
    if not color:
        return f"{label} ❯ "
    return f"\001\033[{style}m\002{label} ❯\001\033[0m\002 "


class LineInput:
    def __init__(self, history_file: Path | None, complete: Callable[[str], list[str]] | None = None) -> None:
        self.history_file = history_file
        self.history_problem: str | None = None
        if readline is None:
            return
        readline.set_auto_history(False)  # only chat lines go in, not answers to the model picker
        readline.set_history_length(HISTORY_LENGTH)
        if complete is not None:
            self._install_completer(complete)
        if history_file is not None:
            try:
                history_file.parent.mkdir(parents=True, exist_ok=True)
                history_file.touch()  # append_history_file needs the file to exist
                readline.read_history_file(history_file)
                readline.write_history_file(history_file)  # trimmed to HISTORY_LENGTH
            except OSError as exc:
                self.history_problem = f"Prompt history is not kept ({history_file}: {exc.strerror or exc})."

    @staticmethod
    def _install_completer(complete: Callable[[str], list[str]]) -> None:
        def completer(_word: str, state: int) -> str | None:
            matches = complete(readline.get_line_buffer()[:readline.get_endidx()])
            return matches[state] if state < len(matches) else None

        readline.set_completer(completer)
        readline.set_completer_delims(" ")
        if "libedit" in (readline.__doc__ or ""):
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")

    def read(self, prompt: str) -> str:
        """One line; raises EOFError (Ctrl-D) and KeyboardInterrupt (Ctrl-C) to the caller."""
        return input(prompt if sys.stdin.isatty() else "")

    def read_message(self, prompt: str, continuation: str) -> str:
        """A line, or the lines between two ``\"\"\"``; kept in the history."""
        line = self.read(prompt)
        if line.strip() == MULTILINE:
            lines: list[str] = []
            while (more := self.read(continuation)).strip() != MULTILINE:
                lines.append(more)
            line = "\n".join(lines)
        elif line.strip().startswith(MULTILINE) and not line.strip().endswith(MULTILINE):
            lines = [line.strip()[len(MULTILINE):]]
            while not (more := self.read(continuation)).rstrip().endswith(MULTILINE):
                lines.append(more)
            lines.append(more.rstrip()[:-len(MULTILINE)])
            line = "\n".join(lines)
        self.remember(line)
        return line

    def remember(self, line: str) -> None:
        if readline is None or not line.strip():
            return
        readline.add_history(line)
        if self.history_file is not None and self.history_problem is None:
            try:
                readline.append_history_file(1, self.history_file)
            except OSError as exc:
                self.history_problem = f"Prompt history is not kept ({self.history_file}: {exc.strerror or exc})."
