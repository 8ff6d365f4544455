"""The console the CLI prints to: the terminal's own size when there is one, else plain text as
wide as it needs.

In its container (``docker compose run``) the CLI sees a terminal only when the caller has one:
the Makefile passes the caller's ``COLUMNS`` / ``LINES`` then (a terminal's size reaches a
container late, after the first table may be drawn) and ``-T`` (no terminal) for a pipe. Without
a terminal (a pipe, CI, ``watch``) rich would assume 80 columns and fold or cut tables; a line
there is as long as its text instead, with no colours.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich.console import Console

PLAIN_WIDTH = 10_000  # no terminal: wide enough that no table is ever narrowed


def make_console(stream: TextIO | None = None) -> Console:
    stream = stream or sys.stdout
    if _is_terminal(stream):
        return Console(file=stream)  # rich reads COLUMNS / LINES, else asks the terminal
    return Console(file=stream, width=PLAIN_WIDTH, color_system=None, force_terminal=False,
                   force_interactive=False)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a file
        return False
