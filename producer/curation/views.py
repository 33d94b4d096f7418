"""The report's text for "can I trust these scores?": reliability, self-consistency, length
bias, calibration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console

from producer.curation.bias import LengthBias
from producer.curation.gold import CalibrationResult, Fit
from producer.curation.results import SCORES
from producer.curation.stats import SampleSpread
from producer.curation.text import label, num, pct, plural, table

if TYPE_CHECKING:
    from producer.curation.report import Report


def print_reliability(report: Report, console: Console) -> None:
    """Krippendorff's alpha across every judge, and a word on pairs missing a judge's record."""
    if report.incomplete_pairs:
        console.print(
            f"[yellow]note:[/] {plural(report.incomplete_pairs, 'pair')} lack a record from "
            "some judge: a pair's records must be consecutive (pair, then model: the order "
            "ibt score writes)",
            highlight=False,
        )
    if not report.alpha:
        return
    values = ", ".join(f"{level} {num(value, 3)}" for level, value in report.alpha.items())
    console.print(
        f"[bold]Reliability across all judges[/]: Krippendorff's α {values}",
        highlight=False,
    )
    console.print(
        "[dim]α: 1 perfect, 0 no better than chance; over the pairs at least 2 judges "
        "scored. Interval weighs a 1-vs-5 split more than 4-vs-5; ordinal uses ranks only[/]"
    )


def print_self_consistency(entries: Sequence[SampleSpread], console: Console) -> None:
    """Per judge sampled N times (``ibt score --samples N``): how far it disagrees with
    itself. Nothing for records without samples."""
    if not entries:
        return
    out = table("judge", "records", "samples", "unreadable", "mean SD", "mean range", "all agree")
    for entry in entries:
        out.add_row(
            label(entry.model),
            f"{entry.records:,}",
            f"{entry.samples:,}",
            f"{entry.unreadable:,}",
            num(entry.mean_sd, 3),
            num(entry.mean_range, 2),
            pct(entry.all_agree),
        )
    console.print("[bold]Self-consistency[/] (each judge's samples of the same pair)")
    console.print(out)
    console.print(
        "[dim]over the records with at least 2 readable samples: the mean of their standard "
        "deviation (population) and of highest - lowest; all agree: every sample the same "
        "score[/]"
    )


def print_length_bias(entries: Sequence[LengthBias], console: Console) -> None:
    """Per judge: does the score follow the answer's length?"""
    if not entries:
        return
    bins = max((len(entry.quintiles) for entry in entries), default=0)
    columns = [f"Q{i + 1}" for i in range(bins)]
    out = table("judge", "length in", "n", "Pearson", "Spearman", *columns, left=2)
    for entry in entries:
        means = [num(b.mean_score) for b in entry.quintiles]
        out.add_row(
            label(entry.model),
            entry.unit,
            f"{entry.n:,}",
            num(entry.pearson, 3),
            num(entry.spearman, 3),
            *means,
            *[""] * (bins - len(means)),
        )
    console.print("[bold]Score and answer length[/] (correlation; mean score per length quintile)")
    console.print(out)
    console.print(
        "[dim]Q1 = the shortest fifth of the scored answers, Q5 the longest; a correlation "
        "near 0 and flat quintiles mean no length bias. tokens: tiktoken o200k_base[/]"
    )


def print_calibration(result: CalibrationResult, console: Console) -> None:
    """Each judge and each aggregate against the human scores of the gold file."""
    console.print(
        f"[bold]Calibration against {result.source}[/]: {result.matched_rows:,} of "
        f"{plural(result.gold_rows, 'gold row')} matched ({result.unmatched_rows:,} not in the "
        f"results), {plural(result.matched_pairs, 'results pair')} labelled",
        highlight=False,
    )
    fits = [*result.judges, *result.aggregates]
    names = [label(f.name) for f in result.judges] + [f"--agg {f.name}" for f in result.aggregates]
    summary = table("judge", "pairs", "exact", "κ quad.", "κ lin.", "Spearman", "offset", left=1)
    for name, entry in zip(names, fits, strict=True):
        summary.add_row(
            name,
            f"{entry.n:,}",
            pct(entry.exact),
            num(entry.kappa_quadratic, 3),
            num(entry.kappa_linear, 3),
            num(entry.spearman, 3),
            "—" if entry.offset is None else f"{entry.offset:+.2f}",
        )
    console.print(summary)
    console.print(
        "[dim]offset: mean of judge - human; an aggregate counts as floor(value), the highest "
        "K at which ibt select keeps the pair[/]"
    )
    thresholds = table("judge", *(f"K={k}" for k in SCORES), left=1)
    for name, entry in zip(names, fits, strict=True):
        thresholds.add_row(
            name, *(f"{num(t.precision)} / {num(t.recall)}" for t in entry.thresholds)
        )
    console.print("[bold]Precision / recall[/] of score >= K against human score >= K")
    console.print(thresholds)
    for name, entry in zip(names, fits, strict=True):
        print_confusion(name, entry, console)


def print_confusion(name: str, entry: Fit, console: Console) -> None:
    out = table(f"{name} ↓ / human →", *(str(k) for k in SCORES), left=1)
    for score, row in zip(SCORES, entry.confusion, strict=True):
        out.add_row(str(score), *(f"{n:,}" if n else "·" for n in row))
    console.print(out)
