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

``--disagreement D`` writes instead the pairs whose judges' scores differ by at least D
(highest minus lowest), for people to review, one row per pair::

    {"instruction": ..., "generation": ..., <input fields>,
     "scores": {"model-a": 5, "model-b": 2}, "reasoning": {"model-a": "...", "model-b": "..."},
     "aggregate": {"agg": "spread", "value": 3}}

(the shape of a selected row, with the spread, highest minus lowest score, as the value
compared with D).

``--gold GOLD --target-precision P`` chooses K: the smallest K whose precision on the gold
set's pairs (aggregate >= K against human >= K) reaches P (see :mod:`producer.curation.gold`).

The input is streamed (records grouped as consecutive pairs) and the rows go to one writer
call as an iterator, so no step holds the whole file.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from producer.curation.gold import Calibration, Threshold, load_gold, recommend
from producer.curation.results import (
    SCORES,
    JudgeRecord,
    PairResult,
    iter_pairs,
    iter_records,
    parse_record,
)
from producer.curation.stats import mean, median
from producer.output import check_output
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
REVIEW_KEYS = ("instruction", "generation", "scores", "reasoning", "aggregate")
Row = dict[str, Any]


@dataclass(kw_only=True)
class Counts:
    """What a pass over the pairs saw; the counts grow as the rows are produced."""

    models: list[str] = field(default_factory=list)
    pairs: int = 0  # pair occurrences in the file
    unscored_pairs: int = 0  # excluded: no judge scored them
    pairs_with_errors: int = 0  # at least one error record (scored by others or not)
    error_records: int = 0


@dataclass(kw_only=True)
class Selection(Counts):
    """What a user needs to choose the threshold."""

    agg: str  # as given (``all`` stays ``all``)
    min_score: int
    passed: dict[int, int] = field(default_factory=lambda: dict.fromkeys(SCORES, 0))
    kept: list[Row] = field(default_factory=list)  # filled by :func:`select` only

    @property
    def scored_pairs(self) -> int:
        return self.pairs - self.unscored_pairs

    @property
    def kept_count(self) -> int:
        return self.passed[self.min_score]


def canonical(agg: str) -> str:
    """The aggregate ``agg`` names: ``all`` is ``min``."""
    return ALIASES.get(agg, agg)


def check_options(min_score: int, agg: str) -> None:
    if canonical(agg) not in AGGREGATES:
        names = ", ".join([*AGGREGATES, *ALIASES])
        raise InputError(f"must be one of {names}, got {agg!r}", source="--agg")
    if isinstance(min_score, bool) or not isinstance(min_score, int) or min_score not in SCORES:
        raise InputError(f"must be an integer from 1 to 5, got {min_score!r}", source="--min-score")


def _parsed(records: Iterable[JudgeRecord | Mapping[str, Any]]) -> Iterator[JudgeRecord]:
    for i, record in enumerate(records, start=1):
        if isinstance(record, JudgeRecord):
            yield record
        else:
            yield parse_record(record, source="<python>", line=i)


def _pairs(
    records: Iterable[JudgeRecord | Mapping[str, Any]], counts: Counts
) -> Iterator[PairResult]:
    """The pairs of ``records``, counting models, pairs and error records into ``counts``."""
    models: dict[str, None] = {}
    for pair in iter_pairs(_parsed(records)):
        for model in pair.models:
            models.setdefault(model)
        counts.models = list(models)
        counts.pairs += 1
        counts.error_records += len(pair.errors)
        counts.pairs_with_errors += bool(pair.errors)
        counts.unscored_pairs += not pair.scores
        yield pair


def _pair_fields(pair: PairResult, reserved: Sequence[str]) -> Row:
    return {
        "instruction": pair.instruction,
        "generation": pair.generation,
        **{k: v for k, v in pair.fields.items() if k not in reserved},
    }


def selected_rows(
    records: Iterable[JudgeRecord | Mapping[str, Any]],
    selection: Selection,
    on_pair: Callable[[PairResult], None] | None = None,
) -> Iterator[Row]:
    """The kept pairs of ``records``, as they stream; ``selection``'s counts follow along.

    ``on_pair`` sees every pair (the gold calibration rides on the same pass).
    """
    check_options(selection.min_score, selection.agg)
    name = canonical(selection.agg)
    aggregate = AGGREGATES[name]
    for pair in _pairs(records, selection):
        if on_pair is not None:
            on_pair(pair)
        if not pair.scores:
            continue
        value = aggregate(list(pair.scores.values()))
        for k in SCORES:
            selection.passed[k] += value >= k
        if value >= selection.min_score:
            models = selection.models
            yield {
                **_pair_fields(pair, SELECTION_KEYS),
                "scores": {m: pair.scores[m] for m in models if m in pair.scores},
                "aggregate": {"agg": name, "value": value},
            }


def select(
    records: Iterable[JudgeRecord | Mapping[str, Any]], *, min_score: int, agg: str
) -> Selection:
    """Keep the pairs whose aggregated score is at least ``min_score``, in a list.

    ``records`` are :class:`JudgeRecord` values or result dicts as ``ibt score`` writes them.
    For small data and the Python API; ``ibt select`` streams through :func:`selected_rows`.
    """
    selection = Selection(agg=agg, min_score=min_score)
    selection.kept = list(selected_rows(records, selection))
    return selection


@dataclass(kw_only=True)
class Review(Counts):
    """Counts of a ``--disagreement`` pass."""

    spread: int
    compared: int = 0  # pairs at least two judges scored
    written: int = 0


def disagreement_rows(
    records: Iterable[JudgeRecord | Mapping[str, Any]], review: Review
) -> Iterator[Row]:
    """The pairs whose judges' scores differ by at least ``review.spread``, with reasoning."""
    for pair in _pairs(records, review):
        if len(pair.scores) < 2:
            continue
        review.compared += 1
        spread = max(pair.scores.values()) - min(pair.scores.values())
        if spread < review.spread:
            continue
        review.written += 1
        order = [m for m in review.models if m in pair.scores]
        yield {
            **_pair_fields(pair, REVIEW_KEYS),
            "scores": {m: pair.scores[m] for m in order},
            "reasoning": {m: pair.reasoning.get(m) for m in order},
            "aggregate": {"agg": "spread", "value": spread},
        }


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


def write_pairs(rows: Iterable[Row], output: str | None) -> int:
    """Write ``rows`` as they come: JSON Lines, a JSON array when ``output`` ends in ``.json``,
    Parquet (row groups) for ``.parquet``; stdout for None/``-``. Returns the rows written.

    Files are written to a temporary name and renamed, so a crash (or a bad record found
    late in a streamed input) leaves no partial output.
    """
    written = 0
    if output in (None, "-"):
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
        sys.stdout.flush()
        return written
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix.lower() == ".parquet":
        from producer.formats import write_parquet

        return write_parquet(iter(rows), target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            array = target.suffix.lower() == ".json"
            handle.write("[" if array else "")
            for row in rows:
                text = json.dumps(row, ensure_ascii=False, indent=2 if array else None)
                if array:
                    text = ("," if written else "") + "\n  " + text.replace("\n", "\n  ")
                handle.write(text if array else text + "\n")
                written += 1
            handle.write(("\n]\n" if written else "]\n") if array else "")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return written


def run_select(
    path: str,
    *,
    min_score: int | None,
    agg: str = "mean",
    output: str | None,
    gold: str | None = None,
    target_precision: float | None = None,
    human_min: int = 4,
    disagreement: int | None = None,
    console: Console | None = None,
) -> int:
    """Select from the results file ``path`` and write the kept pairs with their scores.

    The pairs go to ``output`` (stdout for None or ``-``); the threshold table and notes go to
    ``console`` (stderr). With ``disagreement`` the pairs whose judges differ by that much are
    written instead. With ``gold`` and ``target_precision`` the smallest K at which that share
    of the kept gold pairs is rated >= ``human_min`` by people is recommended, and used when
    ``min_score`` is None (the file is then read twice). Returns 0 when done, 1 when no K
    reaches the target precision, 2 on bad input.
    """
    console = console or Console(stderr=True)
    try:
        check_output(output, inputs=[path])  # before the file is read: nothing written yet
        if disagreement is not None:
            return _run_review(path, disagreement, output, console)
        check_options(min_score or 1, agg)
        if target_precision is not None and not gold:
            raise InputError(
                "needs --gold: precision is measured on human labels", source="--target-precision"
            )
        if target_precision is not None and not 0 < target_precision <= 1:
            raise InputError(
                f"must be in (0, 1], got {target_precision}", source="--target-precision"
            )
        calibration = None
        if gold:
            calibration = Calibration(
                load_gold(gold),
                {canonical(agg): AGGREGATES[canonical(agg)]},
                human_min=human_min,
            )
        choice: Threshold | None = None
        if min_score is None:
            if calibration is None or target_precision is None:
                raise InputError(
                    "give --min-score, or --gold with --target-precision", source="ibt select"
                )
            if path == "-":
                raise InputError("choosing K reads the file twice: give a file", source="<stdin>")
            for pair in iter_pairs(iter_records(path)):
                calibration.add(pair)
            choice = _recommendation(calibration, agg, target_precision, console)
            if choice is None:
                return 1
            min_score, calibration = choice.k, None
        selection = Selection(agg=agg, min_score=min_score)
        on_pair = calibration.add if calibration is not None else None
        written = write_pairs(selected_rows(iter_records(path), selection, on_pair), output)
    except InputError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    print_selection(selection, console)
    if calibration is not None and target_precision is not None:
        _recommendation(calibration, agg, target_precision, console)
    elif calibration is not None:
        _print_gold_thresholds(calibration, agg, console)
    if output not in (None, "-"):
        console.print(
            f"wrote {written:,} of {selection.pairs:,} pairs to {output}",
            highlight=False,
            soft_wrap=True,  # a path is never broken across lines
        )
    return 0


def _recommendation(
    calibration: Calibration, agg: str, target: float, console: Console
) -> Threshold | None:
    name = canonical(agg)
    result = calibration.result([])
    (entry,) = result.aggregates
    _print_gold_thresholds(calibration, agg, console)
    choice = recommend(entry.thresholds, target)
    if choice is None:
        console.print(
            f"[bold red]no K reaches precision {target:.0%}[/] with --agg {agg} on the "
            f"{entry.n:,} labelled pairs of {result.source}",
            highlight=False,
        )
        return None
    console.print(
        f"[bold]recommended K = {choice.k}[/] (--agg {name}): precision "
        f"{choice.precision:.1%} >= {target:.0%} on {entry.n:,} labelled pairs, keeping "
        f"{choice.recall:.1%} of the pairs people rate >= {calibration.human_min}"
        if choice.recall is not None
        else f"[bold]recommended K = {choice.k}[/]",
        highlight=False,
    )
    return choice


def _print_gold_thresholds(calibration: Calibration, agg: str, console: Console) -> None:
    result = calibration.result([])
    (entry,) = result.aggregates
    table = Table()
    for column in ("K", "kept", "precision", "recall"):
        table.add_column(column, justify="right")
    for t in entry.thresholds:
        table.add_row(
            str(t.k),
            f"{t.kept:,}",
            "—" if t.precision is None else f"{t.precision:.1%}",
            "—" if t.recall is None else f"{t.recall:.1%}",
        )
    console.print(
        f"[bold]On the gold pairs[/] ({result.matched_rows:,} of {result.gold_rows:,} rows of "
        f"{result.source} matched): --agg {agg} >= K against human >= {calibration.human_min}",
        highlight=False,
    )
    console.print(table)


def _run_review(path: str, spread: int, output: str | None, console: Console) -> int:
    if isinstance(spread, bool) or not isinstance(spread, int) or not 1 <= spread <= 4:
        raise InputError(f"must be an integer from 1 to 4, got {spread!r}", source="--disagreement")
    review = Review(spread=spread)
    written = write_pairs(disagreement_rows(iter_records(path), review), output)
    console.print(
        f"{written:,} of {review.compared:,} pairs scored by 2 judges or more differ by "
        f">= {spread} (of {review.pairs:,} pairs); each row has every judge's score and "
        "reasoning",
        highlight=False,
    )
    if output not in (None, "-"):
        console.print(f"wrote {written:,} pairs to {output}", highlight=False, soft_wrap=True)
    return 0
