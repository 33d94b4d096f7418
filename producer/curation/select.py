"""``ibt select``: Humpback-style self-curation, keeping the pairs the judges rate highly.

Per pair (an occurrence of an (instruction, generation); duplicates stay separate, see
:mod:`producer.curation.stats`), the scores of the judges that scored it are aggregated and
the pair is kept when the aggregate is >= K:

- ``mean``: the mean score;
- ``median``: the median score (the mean of the middle two for an even count);
- ``min``: the lowest score, i.e. every judge that scored the pair gave >= K. ``all`` is an
  alias of ``min`` (the same rule, kept because ``--agg all`` reads well); it does *not*
  require every judge to have scored the pair.

Error records are left out of the aggregate: a judge that failed on a pair neither keeps nor
vetoes it, for every ``agg``. A pair is kept only if at least one judge scored it; pairs no
judge scored are counted as excluded, and the summary says how many pairs had an error record.

Each kept pair is written, in input order (order of each pair's first record), as::

    {"instruction": ..., "generation": ..., <input fields>,
     "scores": {"model-a": 5, "model-b": 4}, "aggregate": {"agg": "mean", "value": 4.5}}

``<input fields>`` are the record keys that are not a judge's (``id``, ``source``, ...; see
:data:`producer.curation.results.JUDGE_KEYS`), taken from the pair's first record; one named
``scores`` or ``aggregate`` is replaced by the selection's own. ``scores`` has the judges that
scored the pair, in the file's model order (a judge with an error record on it is absent);
``aggregate.agg`` is the canonical name (``min`` for ``all``) and ``aggregate.value`` the
number compared with K. A pair that occurs twice in the input and passes twice is written
twice, so the curated file keeps the scores that justify every pair in it.
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

from producer.curation.results import SCORES, JudgeRecord, parse_record
from producer.curation.stats import group_pairs, mean, median, models_in_order
from workers.errors import InputError

AGGREGATES: dict[str, Callable[[Sequence[int]], float]] = {
    "mean": lambda scores: mean(scores) or 0.0,
    "median": lambda scores: median(scores) or 0.0,
    "min": min,
}
ALIASES = {"all": "min"}
RULES = {
    "mean": "the mean of the scores >= K",
    "median": "the median of the scores >= K",
    "min": "every judge that scored the pair gave >= K",
}
# Keys the selection writes; an input field of the same name is replaced by them.
SELECTION_KEYS = ("instruction", "generation", "scores", "aggregate")


@dataclass(frozen=True)
class Selection:
    """The kept pairs and what a user needs to choose the threshold."""

    kept: list[dict[str, Any]]  # see the module docstring for the shape; input order
    agg: str  # as given (``all`` stays ``all``)
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


def canonical(agg: str) -> str:
    """The aggregate ``agg`` names: ``all`` is ``min``."""
    return ALIASES.get(agg, agg)


def check_options(min_score: int, agg: str) -> None:
    if canonical(agg) not in AGGREGATES:
        names = ", ".join([*AGGREGATES, *ALIASES])
        raise InputError(f"must be one of {names}, got {agg!r}", source="--agg")
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
    name = canonical(agg)
    aggregate = AGGREGATES[name]
    models = models_in_order(parsed)
    pairs = group_pairs(parsed)
    kept: list[dict[str, Any]] = []
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
            kept.append(
                {
                    "instruction": pair.instruction,
                    "generation": pair.generation,
                    **{k: v for k, v in pair.fields.items() if k not in SELECTION_KEYS},
                    "scores": {m: pair.scores[m] for m in models if m in pair.scores},
                    "aggregate": {"agg": name, "value": value},
                }
            )
    return Selection(
        kept=kept,
        agg=agg,
        min_score=min_score,
        models=models,
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
    name = canonical(s.agg)
    alias = f" = {name}" if name != s.agg else ""
    console.print(f"[bold]Pairs kept by threshold K[/] (--agg {s.agg}{alias}: {RULES[name]})")
    console.print(table)
    judges = len(s.models)
    console.print(
        f"{s.pairs:,} pairs, {judges} judge{'s' if judges != 1 else ''}; "
        f"{s.unscored_pairs:,} excluded because no judge scored them.\n"
        f"{s.error_records:,} error records in {s.pairs_with_errors:,} pairs, "
        "left out: a judge that failed on a pair neither keeps nor vetoes it.",
        highlight=False,
    )


def write_pairs(pairs: Sequence[dict[str, Any]], output: str | None) -> None:
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
    """Select from the results file ``path`` and write the kept pairs with their scores.

    The pairs go to ``output`` (stdout for None or ``-``); the threshold table and notes go to
    ``console`` (stderr). Returns 0 when done, 2 on bad input.
    """
    from producer.curation.results import load_results

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
            soft_wrap=True,  # a path is never broken across lines
        )
    return 0
