"""Length bias: do the judges reward long answers? Score against generation length.

Per judge, the counts of (length, score) are kept, not the records: their size is bounded by
the number of distinct lengths, so a 10^7-row file costs no more than a small one with the
same spread of lengths. Pearson and Spearman correlations and the mean score per length
quintile are exact from those counts. Lengths are in characters and in tokens (tiktoken's
``o200k_base``, from the encoding bundled with ibt: nothing is downloaded).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from producer.curation.results import PairResult
from producer.curation.stats import cells_pearson, cells_spearman

QUANTILES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
UNITS = ("chars", "tokens")


def token_counter() -> Callable[[str], int] | None:
    """o200k_base token counts, or None when the bundled encoding cannot be loaded."""
    from producer.tokens import DEFAULT_ENCODING, counter_for

    counter = counter_for(DEFAULT_ENCODING, openai=False)
    encoding = counter.encoding
    if encoding is None:
        return None
    return lambda text: len(encoding.encode_ordinary(text))


@dataclass(frozen=True)
class Bin:
    """Records whose length is in (low, high] (the first bin includes ``low``)."""

    low: float
    high: float
    n: int
    mean_score: float | None


@dataclass(frozen=True)
class LengthBias:
    model: str
    unit: str  # "chars" or "tokens"
    n: int
    pearson: float | None
    spearman: float | None
    quintiles: list[Bin]
    points: dict[tuple[float, float], int]  # (length, score) -> records, for the plot


def quantile(counts: Mapping[float, int], q: float) -> float:
    """numpy's default (linear) quantile of the values counted in ``counts``."""
    n = sum(counts.values())
    h = (n - 1) * q
    lo, frac = int(math.floor(h)), h - math.floor(h)
    below = 0
    values = sorted(counts)
    lower = upper = values[-1]
    for i, value in enumerate(values):
        below += counts[value]
        if below > lo:
            lower = value
            upper = value if below > lo + 1 else values[min(i + 1, len(values) - 1)]
            break
    return lower + frac * (upper - lower)


def quintiles(cells: Mapping[tuple[float, float], int]) -> list[Bin]:
    """Mean score per length quintile, bins as ``pandas.qcut(lengths, 5, duplicates="drop")``."""
    lengths: Counter[float] = Counter()
    for (length, _), count in cells.items():
        lengths[length] += count
    if not lengths:
        return []
    edges = sorted(set(quantile(lengths, q) for q in QUANTILES))
    if len(edges) == 1:
        edges = [edges[0], edges[0]]
    sums = [0] * (len(edges) - 1)
    ns = [0] * (len(edges) - 1)
    for (length, score), count in cells.items():
        i = next(i for i in range(len(edges) - 1) if length <= edges[i + 1] or i == len(ns) - 1)
        sums[i] += int(score) * count
        ns[i] += count
    return [
        Bin(edges[i], edges[i + 1], ns[i], sums[i] / ns[i] if ns[i] else None)
        for i in range(len(ns))
    ]


@dataclass
class Lengths:
    """Per judge and unit, counts of (generation length, score)."""

    count_tokens: Callable[[str], int] | None = None
    cells: dict[tuple[str, str], Counter[tuple[float, float]]] = field(default_factory=dict)

    def add(self, pair: PairResult) -> None:
        if not pair.scores:
            return
        lengths = {"chars": len(pair.generation)}
        if self.count_tokens is not None:
            lengths["tokens"] = self.count_tokens(pair.generation)
        for model, score in pair.scores.items():
            for unit, length in lengths.items():
                self.cells.setdefault((model, unit), Counter())[length, score] += 1

    def result(self, models: Sequence[str]) -> list[LengthBias]:
        units = UNITS if self.count_tokens is not None else UNITS[:1]
        out = []
        for model in models:
            for unit in units:
                cells = self.cells.get((model, unit), Counter())
                out.append(
                    LengthBias(
                        model=model,
                        unit=unit,
                        n=sum(cells.values()),
                        pearson=cells_pearson(cells),
                        spearman=cells_spearman(cells),
                        quintiles=quintiles(cells),
                        points=dict(cells),
                    )
                )
        return out


def bias_json(entry: LengthBias) -> dict[str, Any]:
    return {
        "model": entry.model,
        "unit": entry.unit,
        "records": entry.n,
        "pearson": entry.pearson,
        "spearman": entry.spearman,
        "quintiles": [
            {"low": b.low, "high": b.high, "records": b.n, "mean_score": b.mean_score}
            for b in entry.quintiles
        ],
    }
