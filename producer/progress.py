"""Live progress and the run summary in the terminal (rich), always on stderr."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from workers.jobstate import JobProgress
from workers.models import SIMULATED

console = Console(stderr=True)
if not console.is_terminal:
    # Logs and CI captures are not 80 columns wide; don't wrap the summary table.
    console = Console(stderr=True, width=160)


def label(model: str) -> str:
    return f"{model} [bold yellow](SIMULATED)[/]" if model in SIMULATED else model


class LiveProgress:
    """One bar per model: done / total, errors, retries, rate and ETA."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("errors {task.fields[errors]} retries {task.fields[retries]}"),
            TextColumn("{task.fields[rate]:.1f}/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.started = time.monotonic()

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, snapshot: JobProgress) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        for model in snapshot.models:
            entry = snapshot.per_model[model]
            if model not in self.tasks:
                self.tasks[model] = self.progress.add_task(
                    label(model), total=snapshot.unique, errors=0, retries=0, rate=0.0
                )
            self.progress.update(
                self.tasks[model],
                completed=entry.done,
                errors=entry.errors,
                retries=entry.retries,
                rate=entry.done / elapsed,
            )


def print_summary(job: str, summary: dict[str, Any], elapsed: float | None = None) -> None:
    table = Table(title=f"job {job}")
    for column in (
        "model",
        "items",
        "scored",
        "errors",
        "attempts",
        "cached",
        "tokens in",
        "tokens out",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for model, entry in summary["models"].items():
        errors = ", ".join(f"{kind} {n}" for kind, n in sorted(entry["errors"].items())) or "0"
        table.add_row(
            label(model),
            str(entry["items"]),
            str(entry["scored"]),
            errors,
            str(entry["attempts"]),
            str(entry.get("cached", 0)),
            f"{entry['input_tokens']:,}",
            f"{entry['output_tokens']:,}",
        )
    console.print(table)
    if summary.get("lost"):
        console.print(f"[red]{summary['lost']} records were lost (shown as error records)[/]")
    if elapsed:
        rate = summary["items"] / elapsed if elapsed else 0.0
        console.print(f"{summary['items']} items in {elapsed:.1f}s ({rate:.1f} items/s)")
    if any(model in SIMULATED for model in summary["models"]):
        console.print(
            "[bold yellow]Simulated judges[/] answer deterministically from a local server "
            "speaking the OpenAI/Anthropic wire formats; their scores are not real judgements."
        )
