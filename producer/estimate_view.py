"""The ``--dry-run`` table: one row per model, then the totals and how each figure was made."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from producer.estimate import EXPECTED_OUTPUT_TOKENS, ModelEstimate
from producer.progress import dollars, starred
from workers.catalog import PRICES_AS_OF

out = Console(width=None if Console().is_terminal else 160)


def money(value: float | None) -> str:
    """No price is shown as such, never as $0."""
    return "no price" if value is None else dollars(value)


def total(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def print_estimate(
    estimates: Sequence[ModelEstimate], *, max_cost: float | None, cache_consulted: bool
) -> None:
    first = estimates[0]
    duplicates = first.rows - first.unique
    out.print(
        f"dry run: {first.rows} rows ({first.unique} unique pairs"
        + (f", {duplicates} duplicate rows" if duplicates else "")
        + f") x {len(estimates)} models; nothing was enqueued and no provider was called",
        highlight=False,
    )
    table = Table(box=None, pad_edge=False, padding=(0, 0, 0, 1), title_justify="left")
    table.add_column("model", no_wrap=True)
    for column in ("requests", "cached", "tokens in", "out (expected)", "cost", "batch cost"):
        table.add_column(column, justify="right")
    for entry in estimates:
        table.add_row(
            starred(entry.model) + (" (batch)" if entry.batch else ""),
            f"{entry.requests:,}",
            f"{entry.cached:,}",
            f"{entry.input_tokens:,}",
            f"{entry.output_tokens:,}",
            money(entry.cost(batch=False)),
            money(entry.cost(batch=True)),
        )
    sync_total = total([e.cost(batch=False) for e in estimates])
    batch_total = total([e.cost(batch=True) for e in estimates])
    table.add_row(
        "total",
        f"{sum(e.requests for e in estimates):,}",
        f"{sum(e.cached for e in estimates):,}",
        f"{sum(e.input_tokens for e in estimates):,}",
        f"{sum(e.output_tokens for e in estimates):,}",
        money(sync_total),
        money(batch_total),
    )
    out.print(table)
    mode_total = total([e.cost(batch=e.batch) for e in estimates])
    worst = total([e.cost(batch=e.batch, worst=True) for e in estimates])
    modes = "batch" if all(e.batch for e in estimates) else "synchronous"
    if any(e.batch for e in estimates) and not all(e.batch for e in estimates):
        modes = "each model's"
    out.print(
        f"this job at {modes} prices: {money(mode_total)} expected, at most {money(worst)} "
        "(every reply max_tokens long)",
        highlight=False,
    )
    for entry in estimates:
        out.print(f"tokens in, {entry.model}: {entry.token_method}", highlight=False)
    out.print(
        f"tokens out: {EXPECTED_OUTPUT_TOKENS} per reply expected (a planning figure, capped "
        "by max_tokens); the summary after a run shows the real count",
        highlight=False,
    )
    if not cache_consulted:
        out.print("cached: the result cache was not consulted (none yet, or --no-cache)")
    unpriced = [e.model for e in estimates if e.prices is None]
    if unpriced:
        out.print(
            f"no price for {', '.join(unpriced)}: set input_price_per_mtok and "
            "output_price_per_mtok in a models file; totals leave them out",
            highlight=False,
        )
    out.print(
        f"prices: models file, else the built-in catalog as of {PRICES_AS_OF.isoformat()}; "
        "batch prices apply each model's batch_discount (default 0.5)",
        highlight=False,
    )
    if any(e.simulated for e in estimates):
        out.print(
            "[bold yellow]*[/] simulated judges charge simulated prices "
            "(gpt-4o-mini's and claude-3-5-haiku's)"
        )
    if max_cost is not None and mode_total is not None:
        verdict = (
            "fits within"
            if (worst or 0) <= max_cost
            else ("is expected to fit within" if mode_total <= max_cost else "exceeds")
        )
        out.print(
            f"--max-cost ${max_cost:g}: the expected cost {verdict} the cap"
            + (
                "; items the cap cannot cover would become error records of kind 'budget'"
                if mode_total > max_cost or (worst or 0) > max_cost
                else ""
            ),
            highlight=False,
        )
