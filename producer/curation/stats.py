"""Statistics over a results file: per-judge summaries and agreement between judges.

Pure functions over :class:`~producer.curation.results.JudgeRecord` values (no I/O, no
scipy/sklearn at runtime).

Identity of a pair: the same (instruction, generation) can appear several times in the
input, and each occurrence is scored separately. The n-th record of a given
(instruction, generation, model) belongs to occurrence n of that pair, so duplicates never
merge and each (pair, model) has at most one record.

Scores are the integers 1..5. Weighted kappa uses the fixed category set 1..5 with weights
from the score distance (``(a - b) ** 2`` or ``|a - b|``); this equals
``sklearn.metrics.cohen_kappa_score(a, b, labels=[1, 2, 3, 4, 5], weights=...)``. (Without
``labels`` sklearn weighs by the position among the *observed* labels, which differs from
the score distance when some score never occurs.) Undefined statistics (no data, constant
input) are ``None``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

from producer.curation.results import NO_FIELDS, SCORES, JudgeRecord, error_kind

Weights = Literal["quadratic", "linear"] | None
Prices = Mapping[str, tuple[float, float]]


# --------------------------------------------------------------------------- pairs


@dataclass
class PairResult:
    """Every judge's outcome for one pair occurrence (``occurrence`` counts from 1)."""

    instruction: str
    generation: str
    occurrence: int
    scores: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # model -> error kind
    fields: Mapping[str, Any] = field(default_factory=lambda: NO_FIELDS)  # from its first record


def models_in_order(records: Iterable[JudgeRecord]) -> list[str]:
    """The models in order of first appearance."""
    return list(dict.fromkeys(record.model for record in records))


def group_pairs(records: Iterable[JudgeRecord]) -> list[PairResult]:
    """Group records by pair occurrence, pairs in order of their first record."""
    seen: Counter[tuple[str, str, str]] = Counter()
    pairs: dict[tuple[str, str, int], PairResult] = {}
    for record in records:
        triple = (record.instruction, record.generation, record.model)
        seen[triple] += 1
        key = (record.instruction, record.generation, seen[triple])
        pair = pairs.get(key)
        if pair is None:
            pair = pairs[key] = PairResult(
                record.instruction, record.generation, key[2], fields=record.fields
            )
        if record.score is None:
            pair.errors[record.model] = error_kind(record.error)
        else:
            pair.scores[record.model] = record.score
    return list(pairs.values())


# --------------------------------------------------------------------------- basic statistics


def mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def histogram(scores: Iterable[int]) -> tuple[int, int, int, int, int]:
    """Counts of the scores 1..5."""
    counts = Counter(scores)
    return (counts[1], counts[2], counts[3], counts[4], counts[5])


def exact_agreement(a: Sequence[int], b: Sequence[int]) -> float | None:
    """Share of positions where ``a`` and ``b`` are equal; None when empty."""
    _check_lengths(a, b)
    if not a:
        return None
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def kappa_weight(weights: str | None, i: int, j: int) -> int:
    """The disagreement weight of categories ``i`` and ``j`` (positions): quadratic, linear,
    or unweighted (0 when equal, 1 otherwise)."""
    if weights == "quadratic":
        return (i - j) ** 2
    if weights == "linear":
        return abs(i - j)
    return int(i != j)


def cohen_kappa(
    a: Sequence[int],
    b: Sequence[int],
    *,
    weights: Weights = "quadratic",
    categories: Sequence[int] = SCORES,
) -> float | None:
    """Cohen's kappa of two raters over ordered ``categories`` (weighted by their distance).

    ``kappa = 1 - sum(w * observed) / sum(w * expected)`` with ``expected`` the outer product
    of the two raters' marginals divided by n. None when there is no data or the expected
    disagreement is zero (both raters constant on the same category: agreement is perfect
    but kappa is undefined).
    """
    _check_lengths(a, b)
    n = len(a)
    if n == 0:
        return None
    index = {category: i for i, category in enumerate(categories)}
    k = len(categories)
    try:
        ia = [index[x] for x in a]
        ib = [index[y] for y in b]
    except KeyError as exc:
        raise ValueError(f"value {exc.args[0]!r} is not one of {list(categories)}") from None

    def weight(i: int, j: int) -> int:
        return kappa_weight(weights, i, j)

    rows = Counter(ia)
    cols = Counter(ib)
    # Integer arithmetic until the one division: observed * n vs sum(w * rows * cols).
    observed = sum(weight(i, j) for i, j in zip(ia, ib, strict=True))
    expected = sum(weight(i, j) * rows[i] * cols[j] for i in range(k) for j in range(k))
    if expected == 0:
        return None
    return 1.0 - observed * n / expected


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties sharing the average of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        rank = (start + end) / 2 + 1
        for position in range(start, end + 1):
            ranks[order[position]] = rank
        start = end + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than 2 points or a constant input."""
    _check_lengths(x, y)
    n = len(x)
    if n < 2:
        return None
    mx = math.fsum(x) / n
    my = math.fsum(y) / n
    dx = [v - mx for v in x]
    dy = [v - my for v in y]
    sxx = math.fsum(v * v for v in dx)
    syy = math.fsum(v * v for v in dy)
    if sxx == 0 or syy == 0:
        return None
    sxy = math.fsum(u * v for u, v in zip(dx, dy, strict=True))
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson correlation of average ranks (None when undefined)."""
    _check_lengths(a, b)
    return pearson(average_ranks(a), average_ranks(b))


def _check_lengths(a: Sequence[Any], b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(f"sequences differ in length: {len(a)} != {len(b)}")


def cost(input_tokens: int, output_tokens: int, price: tuple[float, float]) -> float:
    """Cost in currency units of the token counts at (input, output) prices per million."""
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class ModelStats:
    """One judge's records: how many, scores, errors by kind, tokens and cost."""

    model: str
    count: int
    scored: int
    histogram: tuple[int, int, int, int, int]
    mean: float | None
    median: float | None
    errors: dict[str, int]  # kind -> records, most frequent first
    input_tokens: int
    output_tokens: int
    cost: float | None  # None: no price known for this model

    @property
    def error_count(self) -> int:
        return self.count - self.scored

    @property
    def error_share(self) -> dict[str, float]:
        """Share of this judge's records failing with each kind."""
        return {kind: n / self.count for kind, n in self.errors.items()} if self.count else {}


@dataclass(frozen=True)
class SampleSpread:
    """How much one judge disagrees with itself (``ibt score --samples N``), over its
    records that carry at least two readable sample scores.

    ``mean_sd``: the mean over those records of the population standard deviation of its
    samples (``numpy.std``, ddof=0); ``mean_range``: the mean of highest minus lowest;
    ``all_agree``: the share of those records whose samples are all the same score.
    ``unreadable``: samples that could not be read (null), over every record with samples.
    """

    model: str
    records: int
    samples: int
    unreadable: int
    mean_sd: float | None
    mean_range: float | None
    all_agree: float | None


def record_spread(scores: Sequence[int]) -> tuple[float, int]:
    """(population standard deviation, range) of one record's readable sample scores."""
    centre = math.fsum(scores) / len(scores)
    sd = math.sqrt(math.fsum((x - centre) ** 2 for x in scores) / len(scores))
    return sd, max(scores) - min(scores)


@dataclass(frozen=True)
class Agreement:
    """Agreement of two judges over the pairs both scored."""

    model_a: str
    model_b: str
    n: int
    exact: float | None
    kappa_quadratic: float | None
    kappa_linear: float | None
    spearman: float | None


@dataclass(frozen=True)
class Consensus:
    """Across all judges: pairs every judge scored, and those where all gave the same score."""

    models: int
    pairs: int
    all_scored: int
    all_agree: int

    @property
    def agree_share(self) -> float | None:
        return self.all_agree / self.all_scored if self.all_scored else None


def model_stats(records: Iterable[JudgeRecord], prices: Prices | None = None) -> list[ModelStats]:
    """Per judge, in order of first appearance."""
    by_model: dict[str, list[JudgeRecord]] = {}
    for record in records:
        by_model.setdefault(record.model, []).append(record)
    result = []
    for model, items in by_model.items():
        scores = [r.score for r in items if r.score is not None]
        errors = Counter(error_kind(r.error) for r in items if r.score is None)
        tokens_in = sum(r.input_tokens for r in items)
        tokens_out = sum(r.output_tokens for r in items)
        price = (prices or {}).get(model)
        result.append(
            ModelStats(
                model=model,
                count=len(items),
                scored=len(scores),
                histogram=histogram(scores),
                mean=mean(scores),
                median=median(scores),
                errors=dict(sorted(errors.items(), key=lambda item: (-item[1], item[0]))),
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                cost=None if price is None else cost(tokens_in, tokens_out, price),
            )
        )
    return result


def common_scores(pairs: Iterable[PairResult], a: str, b: str) -> tuple[list[int], list[int]]:
    """The scores of ``a`` and ``b`` on the pairs both scored, aligned."""
    xs: list[int] = []
    ys: list[int] = []
    for pair in pairs:
        if a in pair.scores and b in pair.scores:
            xs.append(pair.scores[a])
            ys.append(pair.scores[b])
    return xs, ys


def agreement(pairs: Sequence[PairResult], a: str, b: str) -> Agreement:
    xs, ys = common_scores(pairs, a, b)
    return Agreement(
        model_a=a,
        model_b=b,
        n=len(xs),
        exact=exact_agreement(xs, ys),
        kappa_quadratic=cohen_kappa(xs, ys, weights="quadratic"),
        kappa_linear=cohen_kappa(xs, ys, weights="linear"),
        spearman=spearman(xs, ys),
    )


def pairwise_agreement(pairs: Sequence[PairResult], models: Sequence[str]) -> list[Agreement]:
    """One :class:`Agreement` per unordered model pair, in model order."""
    return [agreement(pairs, a, b) for a, b in combinations(models, 2)]


def consensus(pairs: Sequence[PairResult], models: Sequence[str]) -> Consensus:
    all_scored = [p for p in pairs if all(m in p.scores for m in models)]
    agree = sum(len(set(p.scores[m] for m in models)) == 1 for p in all_scored)
    return Consensus(
        models=len(models), pairs=len(pairs), all_scored=len(all_scored), all_agree=agree
    )


# --------------------------------------------------------------------------- from counts
# Streaming keeps counts, not records: ``cells`` maps (x, y) to how many records had that
# pair of values. Every statistic below is exact from those counts (ranks included: a value's
# average rank follows from how many records have smaller values and how many tie with it).

Cells = Mapping[tuple[float, float], int]


def cells_of(xs: Sequence[float], ys: Sequence[float]) -> Counter[tuple[float, float]]:
    """The counts of aligned values (for tests and small data)."""
    _check_lengths(xs, ys)
    return Counter(zip(xs, ys, strict=True))


def cells_n(cells: Cells) -> int:
    return sum(cells.values())


def cells_exact(cells: Cells) -> float | None:
    """Share of records whose two values are equal."""
    n = cells_n(cells)
    return sum(c for (x, y), c in cells.items() if x == y) / n if n else None


def cells_kappa(
    cells: Cells, *, weights: Weights = "quadratic", categories: Sequence[int] = SCORES
) -> float | None:
    """Cohen's kappa from counts; equals :func:`cohen_kappa` on the records they count."""
    n = cells_n(cells)
    if n == 0:
        return None
    index = {category: i for i, category in enumerate(categories)}

    def weight(i: int, j: int) -> int:
        return kappa_weight(weights, i, j)

    rows: Counter[int] = Counter()
    cols: Counter[int] = Counter()
    observed = 0
    for (x, y), count in cells.items():
        i, j = index[int(x)], index[int(y)]
        rows[i] += count
        cols[j] += count
        observed += weight(i, j) * count
    expected = sum(weight(i, j) * rows[i] * cols[j] for i in rows for j in cols)
    if expected == 0:
        return None
    return 1.0 - observed * n / expected


def rank_of(counts: Mapping[float, int]) -> dict[float, float]:
    """Average rank (1-based) of each value, from how many records have each value."""
    ranks: dict[float, float] = {}
    below = 0
    for value in sorted(counts):
        count = counts[value]
        ranks[value] = below + (count + 1) / 2
        below += count
    return ranks


def cells_pearson(cells: Cells) -> float | None:
    """Pearson correlation of the counted (x, y) values."""
    n = cells_n(cells)
    if n < 2:
        return None
    mx = math.fsum(x * c for (x, _), c in cells.items()) / n
    my = math.fsum(y * c for (_, y), c in cells.items()) / n
    sxx = math.fsum((x - mx) ** 2 * c for (x, _), c in cells.items())
    syy = math.fsum((y - my) ** 2 * c for (_, y), c in cells.items())
    if sxx <= 0 or syy <= 0:
        return None
    sxy = math.fsum((x - mx) * (y - my) * c for (x, y), c in cells.items())
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def cells_spearman(cells: Cells) -> float | None:
    """Spearman's rho from counts: Pearson correlation of the average ranks."""
    xs: Counter[float] = Counter()
    ys: Counter[float] = Counter()
    for (x, y), count in cells.items():
        xs[x] += count
        ys[y] += count
    rx, ry = rank_of(xs), rank_of(ys)
    ranked: Counter[tuple[float, float]] = Counter()
    for (x, y), count in cells.items():
        ranked[rx[x], ry[y]] += count
    return cells_pearson(ranked)


def confusion(cells: Cells, categories: Sequence[int] = SCORES) -> list[list[int]]:
    """Rows: the first value (x), columns: the second (y), both over ``categories``."""
    index = {category: i for i, category in enumerate(categories)}
    matrix = [[0] * len(categories) for _ in categories]
    for (x, y), count in cells.items():
        matrix[index[int(x)]][index[int(y)]] += count
    return matrix


# --------------------------------------------------------------------------- Krippendorff

Level = Literal["nominal", "ordinal", "interval", "ratio"]


@dataclass
class Coincidence:
    """Krippendorff's coincidence counts over 1..5, accumulated one unit (pair) at a time.

    A unit scored by m >= 2 coders adds, for every ordered pair of its values (i != j), 1 /
    (m - 1) to ``o[c][k]``. Kept exactly as integers per m and divided at the end, so the
    memory is O(coders), not O(units). ``alpha`` is Krippendorff (2011), "Computing
    Krippendorff's Alpha-Reliability", with the difference functions of the ``krippendorff``
    package: alpha = 1 - (n - 1) * sum(o * d) / sum(n_c * n_k * d).
    """

    values: tuple[int, ...] = SCORES
    by_m: dict[int, list[list[int]]] = field(default_factory=dict)
    units: int = 0

    def add(self, unit: Iterable[int]) -> None:
        counts = Counter(unit)
        m = sum(counts.values())
        if m < 2:
            return
        matrix = self.by_m.get(m)
        if matrix is None:
            matrix = self.by_m[m] = [[0] * len(self.values) for _ in self.values]
        index = self.values.index
        for c, nc in counts.items():
            row = matrix[index(c)]
            for d, nd in counts.items():
                row[index(d)] += nc * (nd - 1) if c == d else nc * nd
        self.units += 1

    def matrix(self) -> list[list[float]]:
        k = len(self.values)
        o = [[0.0] * k for _ in range(k)]
        for m, pairs in self.by_m.items():
            for i in range(k):
                for j in range(k):
                    o[i][j] += pairs[i][j] / (m - 1)
        return o

    def alpha(self, level: Level = "interval") -> float | None:
        """None when fewer than 2 pairable values or no expected disagreement."""
        o = self.matrix()
        k = len(o)
        n_c = [math.fsum(row) for row in o]
        n = math.fsum(n_c)
        if n <= 1:
            return None

        def delta(i: int, j: int) -> float:
            c, d = self.values[i], self.values[j]
            if level == "nominal":
                return float(c != d)
            if level == "interval":
                return float((c - d) ** 2)
            if level == "ratio":
                return ((c - d) / (c + d)) ** 2 if c + d else 0.0
            lo, hi = min(i, j), max(i, j)
            return (math.fsum(n_c[lo : hi + 1]) - (n_c[i] + n_c[j]) / 2) ** 2

        observed = math.fsum(o[i][j] * delta(i, j) for i in range(k) for j in range(k))
        expected = math.fsum(n_c[i] * n_c[j] * delta(i, j) for i in range(k) for j in range(k))
        if expected == 0:
            return None
        return 1.0 - (n - 1) * observed / expected
