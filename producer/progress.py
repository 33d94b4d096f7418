"""Live progress and the run summary in the terminal (rich), always on stderr."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Column, Table

from workers.jobstate import JobProgress
from workers.models import SIMULATED
from workers.pricing import from_nano

console = Console(stderr=True)
if not console.is_terminal:
    # Logs and CI captures are not 80 columns wide; don't wrap the summary table.
    console = Console(stderr=True, width=160)


def starred(model: str) -> str:
    """A simulated judge's name with a star, explained in a footnote (names are never cut)."""
    return f"{model} [bold yellow]*[/]" if model in SIMULATED else model


class RecentRate:
    """Completions per second over the last ``window`` seconds, and the ETA that follows.

    Rich's own estimate averages since the start, so a burst of cached or fast items and
    then a stretch of retries shows "2 s left" for a quarter of a minute; this one looks
    only at recent completions (a retried item counts when it completes), and shows no ETA
    rather than a stale one when nothing completed lately.
    """

    def __init__(self, window: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, done: int) -> None:
        now = self.clock()
        self.samples.append((now, done))
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()

    def rate(self) -> float:
        """Completions per second since the oldest sample in the window (0 if unknown)."""
        if len(self.samples) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        span = max(t1 - t0, 1e-6)
        return max(d1 - d0, 0) / span

    def eta(self, remaining: int) -> float | None:
        """Seconds left at the recent rate; None while the rate is unknown or zero."""
        if remaining <= 0:
            return 0.0
        rate = self.rate()
        return remaining / rate if rate > 0 else None


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA -:--:--"
    seconds = int(round(seconds))
    return f"ETA {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def dollars(value: float) -> str:
    """A short dollar amount: cents once it is worth it, else 4 decimals."""
    return f"${value:,.2f}" if value >= 10 else f"${value:.4f}"


def usd(nano: int | float) -> str:
    """Nano-dollars (the unit Redis counts in) as :func:`dollars`."""
    return dollars(from_nano(nano))


class LiveProgress:
    """One bar per model (done / total, errors, retries, recent rate, ETA, cost so far) and,
    with a cap, one for the budget (spent / cap)."""

    BUDGET_ROW = "budget"

    def __init__(self, *, enabled: bool = True) -> None:
        # Fits 80 columns: names never cut (a simulated judge is starred, as in the summary).
        self.progress = Progress(
            TextColumn("{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=12),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[detail]}"),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self.enabled = enabled
        self.tasks: dict[str, TaskID] = {}
        self.rates: dict[str, RecentRate] = {}

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def warn(self, text: str) -> None:
        """A line above the bars (or on stderr when the display is off)."""
        if self.enabled:
            self.progress.console.print(f"[bold yellow]warning:[/] {text}", highlight=False)
        else:
            console.print(f"[bold yellow]warning:[/] {text}", highlight=False)

    def update(self, snapshot: JobProgress) -> None:
        for model in snapshot.models:
            entry = snapshot.per_model[model]
            if model not in self.tasks:
                self.tasks[model] = self.progress.add_task(
                    starred(model), total=snapshot.unique, count="", detail=""
                )
                self.rates[model] = RecentRate()
            rate = self.rates[model]
            rate.add(entry.done)
            cost = f" {usd(entry.cost_nano)}" if entry.cost_nano else ""
            if entry.batch_waiting:
                cost += f" in batches {entry.batch_waiting}"
            self.progress.update(
                self.tasks[model],
                completed=entry.done,
                count=f"{entry.done}/{snapshot.unique}",
                detail=f"err {entry.errors} retry {entry.retries} {rate.rate():.1f}/s "
                f"{format_eta(rate.eta(snapshot.unique - entry.done))}{cost}",
            )
        if snapshot.budget_raw:
            self._update_budget(snapshot)

    def _update_budget(self, snapshot: JobProgress) -> None:
        from workers.budget import parse

        state = parse(snapshot.budget_raw or {})
        capped = [("job", state.job)] if state.job.cap is not None else []
        capped += [(m, s) for m, s in state.models.items() if s.cap is not None]
        for name, spend in capped:
            row = self.BUDGET_ROW if name == "job" else f"{self.BUDGET_ROW} {name}"
            if row not in self.tasks:
                self.tasks[row] = self.progress.add_task(row, total=spend.cap, count="", detail="")
            self.progress.update(
                self.tasks[row],
                completed=min(spend.spent, spend.cap or 0),
                count=f"{usd(spend.spent)}/{usd(spend.cap or 0)}",
                detail=f"reserved {usd(spend.reserved)}" if spend.reserved else "",
            )


class NoConsumerWatch:
    """Warns, once per model, when its queue has work but no live worker (cluster mode).

    A model nobody serves would otherwise sit at 0/N, 0.0/s forever. Workers announce
    themselves in Redis (``workers.presence``); a short grace covers workers still starting.
    """

    def __init__(
        self,
        client: Any,
        specs: Any,
        *,
        grace: float = 5.0,
        every: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.queues = {spec.name: spec.queue for spec in specs}
        self.grace = grace
        self.every = every
        self.clock = clock
        self.started = clock()
        self.checked = float("-inf")
        self.warned: set[str] = set()

    @staticmethod
    def message(model: str) -> str:
        from workers.models import queue_name

        return f"no worker is consuming {queue_name(model)}; start one with `ibt worker -m {model}`"

    def check(self, snapshot: JobProgress) -> list[str]:
        """Warnings due now (each model once, until a worker shows up for it)."""
        from workers.presence import live_consumers

        now = self.clock()
        if now - self.started < self.grace or now - self.checked < self.every:
            return []
        self.checked = now
        warnings = []
        for model, queue in self.queues.items():
            entry = snapshot.per_model.get(model)
            if entry is None or entry.done >= snapshot.unique:
                continue
            if live_consumers(self.client, queue):
                self.warned.discard(model)
            elif model not in self.warned:
                self.warned.add(model)
                warnings.append(self.message(model))
        return warnings


def cost_text(entry: dict[str, Any]) -> str:
    """A summary entry's cost: "?" when the model has no price (unknown is never $0)."""
    cost = entry.get("cost_usd")
    if cost is None:
        return "?" if "cost_usd" in entry else "-"
    return dollars(cost)


def budget_line(state: dict[str, Any]) -> str:
    """Spent / cap of the job and of each capped model, from the summary's budget entry."""
    parts = []
    if state.get("cap_usd") is not None:
        parts.append(f"job {dollars(state['spent_usd'])} of {dollars(state['cap_usd'])} cap")
    for model, entry in state.get("models", {}).items():
        if entry.get("cap_usd") is not None:
            spent, cap = dollars(entry["spent_usd"]), dollars(entry["cap_usd"])
            parts.append(f"{model} {spent} of {cap} cap")
    return "budget: " + ", ".join(parts) + " (spent counts calls whose cost is unknown at worst)"


def counts_line(summary: dict[str, Any]) -> str:
    """Rows, unique pairs, records and calls, each named: never one ambiguous 'items'."""
    rows = int(summary.get("rows", 0))
    models = len(summary["models"])
    duplicates = int(summary.get("duplicates", 0))
    unique = rows - duplicates
    calls = sum(int(entry.get("attempts", 0)) for entry in summary["models"].values())
    cached = sum(int(entry.get("cached", 0)) for entry in summary["models"].values())
    text = (
        f"{rows} rows x {models} model{'s' if models != 1 else ''} = {rows * models} records; "
        f"{unique} unique pair{'s' if unique != 1 else ''} judged per model"
    )
    if duplicates:
        text += (
            f" ({duplicates} duplicate row{'s reuse' if duplicates != 1 else ' reuses'} a verdict)"
        )
    return text + f"; {calls} provider calls, {cached} cached verdicts"


def print_summary(job: str, summary: dict[str, Any], elapsed: float | None = None) -> None:
    """The end-of-run table; fits 80 columns (names are never cut: simulated judges get a
    star and a footnote, error kinds a line of their own)."""
    table = Table(
        title=f"job {job}",
        title_justify="left",
        box=None,
        pad_edge=False,
        padding=(0, 0, 0, 1),
    )
    names = [f"{m} *" if m in SIMULATED else m for m in summary["models"]]
    table.add_column("model", no_wrap=True, min_width=max(map(len, names), default=5))
    columns = ["judged", "scored", "errors", "calls", "cached", "tokens in", "out", "cost"]
    for column in columns:
        table.add_column(column, justify="right", overflow="fold")
    kinds: list[str] = []
    for model, entry in summary["models"].items():
        errors = sum(entry["errors"].values())
        if errors:
            detail = ", ".join(f"{kind} {n}" for kind, n in sorted(entry["errors"].items()))
            kinds.append(f"{model}: {detail}")
        table.add_row(
            starred(model),
            str(entry["items"]),
            str(entry["scored"]),
            str(errors),
            str(entry["attempts"]),
            str(entry.get("cached", 0)),
            f"{entry['input_tokens']:,}",
            f"{entry['output_tokens']:,}",
            cost_text(entry),
        )
    console.print(table)
    if kinds:
        console.print("errors by kind: " + "; ".join(kinds), highlight=False)
    console.print(counts_line(summary), highlight=False)
    entries = summary["models"].items()
    unpriced = [m for m, e in entries if "cost_usd" in e and e["cost_usd"] is None]
    if unpriced:
        console.print(
            f"cost ?: no price for {', '.join(unpriced)} (set input_price_per_mtok and "
            "output_price_per_mtok in a models file)",
            highlight=False,
        )
    if summary.get("budget"):
        console.print(budget_line(summary["budget"]), highlight=False)
    if summary.get("lost"):
        console.print(f"[red]{summary['lost']} records were lost (shown as error records)[/]")
    if elapsed:
        rate = summary["items"] / elapsed if elapsed else 0.0
        console.print(
            f"{summary['items']} judgements in {elapsed:.1f} s ({rate:.1f}/s)", highlight=False
        )
    if any(model in SIMULATED for model in summary["models"]):
        console.print(
            "[bold yellow]* simulated judges[/] answer deterministically from a local server "
            "speaking the OpenAI/Anthropic wire formats; their scores are not real judgements."
        )
