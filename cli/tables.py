"""Tables that fit the terminal without cutting what a user reads first.

rich shrinks every column of a table that is too wide and cuts cells with "…": on an 80-column
terminal `make ps` showed "bar-ti…" and "rea…". A ``Fitted`` table instead, at the width it is
drawn at, (1) drops the less important columns, in the order given, until it fits; (2) never
cuts the columns it must keep (the model's name and state): they get the width of their longest
cell; (3) lets any other column that is still too wide wrap onto a second line.

It decides at render time, so one view fits a live refresh (``ps -w``), a terminal of any size
and a pipe (where the console is as wide as the text: nothing is dropped, see ``cli.console``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table

UNBOUNDED = 1_000_000  # the width a table is measured at to learn what it wants


@dataclass(frozen=True)
class Fitted:
    """``table``, narrowed to the width it is drawn at: ``keep`` columns are never cut, ``drop``
    columns go first (in that order) when it is too wide. Columns are named by their header."""

    table: Table
    keep: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield fit(self.table, console, options.max_width, self.keep, self.drop)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, fit(self.table, console, options.max_width, self.keep, self.drop))


def natural_width(table: Table, console: Console) -> int:
    """The width ``table`` takes when nothing limits it."""
    return Measurement.get(console, console.options.update(max_width=UNBOUNDED), table).maximum


def fit(table: Table, console: Console, width: int, keep: tuple[str, ...] = (),
        drop: tuple[str, ...] = ()) -> Table:
    """A copy of ``table`` that fits ``width`` (see ``Fitted``); ``table`` itself is not changed."""
    fitted = copy.copy(table)
    fitted.columns = [copy.copy(column) for column in table.columns]
    for name in drop:
        if natural_width(fitted, console) <= width:
            break
        fitted.columns = [c for c in fitted.columns if c.header != name]
    for index, column in enumerate(fitted.columns):
        column._index = index  # rich pads the first and last columns by their position
        if column.header in keep:
            # A fixed width is never collapsed by rich: the longest cell (or the header) whole.
            column.width = max((_cell_width(console, cell) for cell in (column.header, *column._cells)), default=1)
            column.no_wrap = True
        else:
            column.no_wrap = False
            column.overflow = "fold"
    return fitted


def _cell_width(console: Console, cell) -> int:
    return Measurement.get(console, console.options.update(max_width=UNBOUNDED), cell).maximum
