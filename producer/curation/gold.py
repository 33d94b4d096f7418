"""Calibration against human labels: how far each judge (and each aggregate) matches people.

A gold file is JSON, JSON Lines or Parquet with one ``{instruction, generation, score}`` row
per labelled pair (``score`` 1..5 from people; an ``id`` column is optional). It is small
next to the results, so it is held in memory; the results stream past it. A results pair
matches a gold row by ``id`` when both have one, else by its exact (instruction, generation).

Per judge, only counts are kept: a (judge score, human score) table, from which agreement,
kappa, Spearman, the mean offset, the confusion matrix and precision / recall at every
threshold K follow exactly. An aggregate (``mean``, ``median``, ``min`` as ``ibt select``
computes them) is kept as (aggregate value, human score) counts; its category in the
confusion matrix and for kappa is the highest K at which ``ibt select`` keeps the pair
(``floor(value)``), so the thresholds below are exactly what selecting at K would keep.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from producer.curation.results import SCORES, PairResult, iter_raw
from producer.curation.stats import (
    cells_exact,
    cells_kappa,
    cells_n,
    cells_spearman,
    confusion,
)
from producer.inputs import json_type_name
from workers.errors import InputError

TextKey = tuple[str, str]


@dataclass
class Gold:
    """Human scores by id and by (instruction, generation)."""

    source: str
    rows: int = 0
    by_id: dict[str, int] = field(default_factory=dict)
    by_text: dict[TextKey, int] = field(default_factory=dict)
    # Which gold rows some results pair matched (by the row's number), to report the rest.
    matched: set[int] = field(default_factory=set)
    _row_of_id: dict[str, int] = field(default_factory=dict)
    _row_of_text: dict[TextKey, int] = field(default_factory=dict)

    def lookup(self, pair: PairResult) -> int | None:
        """The human score of ``pair``, or None; remembers which gold row matched."""
        pair_id = pair.fields.get("id")
        if pair_id is not None and self.by_id:
            key = str(pair_id)
            if key in self.by_id:
                self.matched.add(self._row_of_id[key])
                return self.by_id[key]
            return None
        text = (pair.instruction, pair.generation)
        if text in self.by_text:
            self.matched.add(self._row_of_text[text])
            return self.by_text[text]
        return None

    @property
    def unmatched(self) -> int:
        return self.rows - len(self.matched)


def load_gold(path: str) -> Gold:
    """Read and validate a gold file; errors name the file, the line (or row) and the field."""
    gold = Gold(source=path)
    for line, raw in _gold_rows(path):
        gold.rows += 1
        _add_row(gold, raw, line)
    if not gold.rows:
        raise InputError("no rows", source=path)
    return gold


def _gold_rows(path: str) -> Iterator[tuple[int, Any]]:
    return iter_raw(path, required=False)


def _add_row(gold: Gold, raw: Any, line: int) -> None:
    source = gold.source
    if not isinstance(raw, Mapping):
        raise InputError(f"expected an object, got {json_type_name(raw)}", source=source, line=line)
    score = _human_score(raw.get("score"), source, line)
    row_id = raw.get("id")
    texts = [raw.get("instruction"), raw.get("generation")]
    if row_id is None:
        for key, value in zip(("instruction", "generation"), texts, strict=True):
            if not isinstance(value, str):
                problem = "missing" if value is None else f"must be a string, got {value!r}"
                raise InputError(f"{problem} (or give an id)", source=source, line=line, field=key)
    if row_id is not None:
        _put(gold.by_id, gold._row_of_id, str(row_id), score, gold.rows, source, line, "id")
    if all(isinstance(text, str) for text in texts):
        text_key = (str(texts[0]), str(texts[1]))
        _put(gold.by_text, gold._row_of_text, text_key, score, gold.rows, source, line, "score")


def _put(
    scores: dict[Any, int],
    rows: dict[Any, int],
    key: Any,
    score: int,
    row: int,
    source: str,
    line: int,
    name: str,
) -> None:
    """Record one label; the same pair labelled twice must agree (which would we trust?)."""
    if key in scores and scores[key] != score:
        raise InputError(
            f"labelled {scores[key]} by an earlier row and {score} here",
            source=source,
            line=line,
            field=name,
        )
    scores.setdefault(key, score)
    rows.setdefault(key, row)


def _human_score(value: Any, source: str, line: int) -> int:
    if isinstance(value, str) and value.strip() in ("1", "2", "3", "4", "5"):
        return int(value)
    if isinstance(value, int | float) and not isinstance(value, bool) and value in SCORES:
        return int(value)
    raise InputError(f"must be 1..5, got {value!r}", source=source, line=line, field="score")


# --------------------------------------------------------------------------- the statistics


@dataclass(frozen=True)
class Threshold:
    """Keeping "judge >= K" against "human >= K" over the gold pairs."""

    k: int
    kept: int  # gold pairs the judge scores >= K
    relevant: int  # gold pairs people score >= K
    hits: int  # both
    precision: float | None  # None when nothing is kept
    recall: float | None  # None when people rate nothing >= K


@dataclass(frozen=True)
class Fit:
    """One judge (or aggregate) against the human scores over the matched gold pairs."""

    name: str
    n: int
    exact: float | None
    kappa_quadratic: float | None
    kappa_linear: float | None
    spearman: float | None
    offset: float | None  # mean of (judge - human)
    confusion: list[list[int]]  # rows: judge 1..5, columns: human 1..5
    thresholds: list[Threshold]


def fit(name: str, cells: Mapping[tuple[float, float], int], human_min: int | None = None) -> Fit:
    """The statistics of (judge value, human score) counts; values may be fractional.

    ``human_min``: the thresholds count a pair as relevant when people scored it at least
    this, whatever K (default: at least K).
    """
    n = cells_n(cells)
    category: Counter[tuple[float, float]] = Counter()
    for (value, human), count in cells.items():
        category[math.floor(value), human] += count
    offset = math.fsum((v - h) * c for (v, h), c in cells.items()) / n if n else None
    return Fit(
        name=name,
        n=n,
        exact=cells_exact(category),
        kappa_quadratic=cells_kappa(category, weights="quadratic"),
        kappa_linear=cells_kappa(category, weights="linear"),
        spearman=cells_spearman(cells),
        offset=offset,
        confusion=confusion(category),
        thresholds=[threshold(cells, k, human_min) for k in SCORES],
    )


def threshold(
    cells: Mapping[tuple[float, float], int], k: int, human_min: int | None = None
) -> Threshold:
    """Judge >= ``k`` against human >= ``human_min`` (default: ``k`` as well)."""
    bar = k if human_min is None else human_min
    kept = sum(c for (v, _), c in cells.items() if v >= k)
    relevant = sum(c for (_, h), c in cells.items() if h >= bar)
    hits = sum(c for (v, h), c in cells.items() if v >= k and h >= bar)
    return Threshold(
        k=k,
        kept=kept,
        relevant=relevant,
        hits=hits,
        precision=hits / kept if kept else None,
        recall=hits / relevant if relevant else None,
    )


def recommend(thresholds: Sequence[Threshold], target: float) -> Threshold | None:
    """The smallest K whose precision reaches ``target`` (keeping the most), or None.

    Meaningful against a fixed human bar (``human_min``): against "human >= K", K=1 keeps
    everything and is trivially 100% precise.
    """
    for entry in thresholds:
        if entry.precision is not None and entry.precision >= target:
            return entry
    return None


@dataclass
class Calibration:
    """Counts of (judge or aggregate value, human score) over the pairs the gold file labels."""

    gold: Gold
    aggregates: Mapping[str, Any]  # name -> function of a pair's scores (see select.py)
    judges: dict[str, Counter[tuple[float, float]]] = field(default_factory=dict)
    by_agg: dict[str, Counter[tuple[float, float]]] = field(default_factory=dict)
    pairs: int = 0  # results pairs that matched a gold row
    human_min: int | None = None  # see :func:`fit`

    def add(self, pair: PairResult) -> None:
        human = self.gold.lookup(pair)
        if human is None:
            return
        self.pairs += 1
        for model, score in pair.scores.items():
            self.judges.setdefault(model, Counter())[score, human] += 1
        if pair.scores:
            values = list(pair.scores.values())
            for name, aggregate in self.aggregates.items():
                self.by_agg.setdefault(name, Counter())[aggregate(values), human] += 1

    def result(self, models: Sequence[str]) -> CalibrationResult:
        return CalibrationResult(
            source=self.gold.source,
            gold_rows=self.gold.rows,
            matched_rows=len(self.gold.matched),
            unmatched_rows=self.gold.unmatched,
            matched_pairs=self.pairs,
            judges=[fit(m, self.judges.get(m, Counter())) for m in models],
            aggregates=[
                fit(a, self.by_agg.get(a, Counter()), self.human_min) for a in self.aggregates
            ],
        )


@dataclass(frozen=True)
class CalibrationResult:
    source: str
    gold_rows: int
    matched_rows: int
    unmatched_rows: int
    matched_pairs: int
    judges: list[Fit]
    aggregates: list[Fit]


def fit_json(entry: Fit) -> dict[str, Any]:
    return {
        "name": entry.name,
        "pairs": entry.n,
        "exact": entry.exact,
        "kappa_quadratic": entry.kappa_quadratic,
        "kappa_linear": entry.kappa_linear,
        "spearman": entry.spearman,
        "mean_offset": entry.offset,
        "confusion": entry.confusion,
        "thresholds": [
            {
                "k": t.k,
                "kept": t.kept,
                "relevant": t.relevant,
                "hits": t.hits,
                "precision": t.precision,
                "recall": t.recall,
            }
            for t in entry.thresholds
        ],
    }
