"""``ibt select``: Humpback-style self-curation, keeping the pairs the judges rate highly.

Per pair (an occurrence of an (instruction, generation); duplicates stay separate, see
:mod:`producer.stats`), the scores of the judges that scored it are aggregated:

- ``mean``: the mean score >= K;
- ``median``: the median score >= K (the mean of the middle two for an even count);
- ``min`` / ``all``: every judge that scored the pair gave >= K. The two are the same rule;
  ``all`` is there because it reads better on the command line.

Error records are left out of the aggregate: a judge that failed on a pair neither keeps nor
vetoes it, for every ``agg``. A pair is kept only if at least one judge scored it; pairs no
judge scored are counted as excluded, and the summary says how many pairs had an error record.
The kept pairs are written as ``{"instruction", "generation"}`` in input order (order of each
pair's first record); a pair that occurs twice in the input and passes twice is written twice.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from producer.stats import (
    SCORES,
    JudgeRecord,
    group_pairs,
    mean,
    median,
    models_in_order,
    parse_record,
)
from workers.errors import InputError

AGGREGATES: dict[str, Callable[[Sequence[int]], float]] = {
    "mean": lambda scores: mean(scores) or 0.0,
    "median": lambda scores: median(scores) or 0.0,
    "min": min,
    "all": min,
}


@dataclass(frozen=True)
class Selection:
    """The kept pairs and what a user needs to choose the threshold."""

    kept: list[dict[str, str]]  # {"instruction", "generation"}, input order
    agg: str
    min_score: int
    models: list[str]
    pairs: int  # pair occurrences in the file
    unscored_pairs: int  # excluded: no judge scored them
    pairs_with_errors: int  # at least one error record (scored by others or not)
    error_records: int
    passed: dict[int, int]  # K -> pairs kept at threshold K, for K = 1..5

    @property
    def scored_pairs(self) -> int:
        return self.pairs - self.unscored_pairs


def check_options(min_score: int, agg: str) -> None:
    if agg not in AGGREGATES:
        raise InputError(f"must be one of {', '.join(AGGREGATES)}, got {agg!r}", source="--agg")
    if isinstance(min_score, bool) or not isinstance(min_score, int) or min_score not in SCORES:
        raise InputError(f"must be an integer from 1 to 5, got {min_score!r}", source="--min-score")


def select(
    records: Iterable[JudgeRecord | Mapping[str, Any]], *, min_score: int, agg: str
) -> Selection:
    """Keep the pairs whose aggregated score is at least ``min_score``.

    ``records`` are :class:`JudgeRecord` values or result dicts as ``ibt score`` writes them.
    """
    check_options(min_score, agg)
    parsed = [
        r if isinstance(r, JudgeRecord) else parse_record(r, source="<python>", line=i)
        for i, r in enumerate(records, start=1)
    ]
    aggregate = AGGREGATES[agg]
    pairs = group_pairs(parsed)
    kept: list[dict[str, str]] = []
    passed = dict.fromkeys(SCORES, 0)
    unscored = 0
    for pair in pairs:
        if not pair.scores:
            unscored += 1
            continue
        value = aggregate(list(pair.scores.values()))
        for k in SCORES:
            passed[k] += value >= k
        if value >= min_score:
            kept.append({"instruction": pair.instruction, "generation": pair.generation})
    return Selection(
        kept=kept,
        agg=agg,
        min_score=min_score,
        models=models_in_order(parsed),
        pairs=len(pairs),
        unscored_pairs=unscored,
        pairs_with_errors=sum(bool(pair.errors) for pair in pairs),
        error_records=sum(record.score is None for record in parsed),
        passed=passed,
    )


def print_selection(selection: Selection, console: Console) -> None:
    s = selection
    table = Table()
    table.add_column("K", justify="right")
    table.add_column("pairs kept", justify="right")
    table.add_column("share of pairs", justify="right")
    for k in SCORES:
        n = s.passed[k]
        chosen = k == s.min_score
        table.add_row(
            f"{k} ←" if chosen else str(k),
            f"{n:,}",
            f"{n / s.pairs:.1%}" if s.pairs else "—",
            style="bold green" if chosen else None,
        )
    rule = "every judge that scored it gives" if s.agg in ("min", "all") else f"{s.agg} score"
    console.print(f"[bold]Pairs kept by threshold K[/] (--agg {s.agg}: {rule} >= K)")
    console.print(table)
    judges = len(s.models)
    console.print(
        f"{s.pairs:,} pairs, {judges} judge{'s' if judges != 1 else ''}; "
        f"{s.unscored_pairs:,} excluded because no judge scored them.\n"
        f"{s.error_records:,} error records in {s.pairs_with_errors:,} pairs, "
        "left out of the aggregate.",
        highlight=False,
    )


def write_pairs(pairs: Sequence[dict[str, str]], output: str | None) -> None:
    """JSON Lines, or a JSON array when ``output`` ends in ``.json``; stdout for None/``-``.

    Files are written to a temporary name and renamed, so a crash leaves no partial output.
    """
    if output in (None, "-"):
        for pair in pairs:
            sys.stdout.write(json.dumps(pair, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if target.suffix.lower() == ".json":
                json.dump(list(pairs), handle, ensure_ascii=False, indent=2)
                handle.write("\n")
            else:
                for pair in pairs:
                    handle.write(json.dumps(pair, ensure_ascii=False) + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_select(
    path: str,
    *,
    min_score: int,
    agg: str,
    output: str | None,
    console: Console | None = None,
) -> int:
    """Select from the results file ``path`` and write the kept pairs; 0 done, 2 bad input."""
    from producer.report import load_results

    console = console or Console(stderr=True)
    try:
        check_options(min_score, agg)
        selection = select(load_results(path), min_score=min_score, agg=agg)
    except InputError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    print_selection(selection, console)
    write_pairs(selection.kept, output)
    if output not in (None, "-"):
        console.print(
            f"wrote {len(selection.kept):,} of {selection.pairs:,} pairs to {output}",
            highlight=False,
        )
    return 0
