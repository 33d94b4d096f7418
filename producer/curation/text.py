"""Small helpers the report's text uses: numbers, shares, names and tables, one style."""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from workers.models import SIMULATED


def label(model: str) -> str:
    return f"{model} [bold yellow](SIMULATED)[/]" if model in SIMULATED else model


def num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}" if value in (0, 1) else f"{value:.1%}"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def fits(console: Console, table: Table) -> bool:
    natural = Measurement.get(console, console.options.update_width(100_000), table).maximum
    return natural <= console.width


def table(*columns: str, left: int = 1) -> Table:
    """A table whose first ``left`` columns are names and the rest right-aligned numbers."""
    table = Table()
    for i, column in enumerate(columns):
        if i < left:
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, justify="right", no_wrap=True)
    return table
