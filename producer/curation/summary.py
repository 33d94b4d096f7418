"""One pass over a results file: every count ``ibt report`` needs, none of the records.

Records stream in (pair, then model) order; :func:`~producer.curation.results.iter_pairs`
groups each pair's consecutive records. What is kept grows with the judges and the spread
of the scores and lengths, not with the records: per judge a histogram, error kinds and
token sums; per pair of judges a 5x5 table of their scores; Krippendorff's coincidence
counts; per judge (length, score) counts; with a gold file, (judge, human) tables.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import combinations

from producer.curation.bias import Lengths
from producer.curation.gold import Calibration, Gold
from producer.curation.results import SCORES, JudgeRecord, PairResult, error_kind, iter_pairs
from producer.curation.stats import (
    Agreement,
    Coincidence,
    Consensus,
    ModelStats,
    Prices,
    SampleSpread,
    cells_exact,
    cells_kappa,
    cells_spearman,
    cost,
    record_spread,
)


@dataclass
class JudgeCounts:
    records: int = 0
    histogram: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    input_tokens: int = 0
    output_tokens: int = 0
    spread: SpreadCounts | None = None  # only for a judge whose records carry ``samples``


@dataclass
class SpreadCounts:
    """Running sums behind a judge's :class:`SampleSpread`."""

    records: int = 0  # with at least two readable samples
    samples: int = 0
    unreadable: int = 0
    sd_sum: float = 0.0
    range_sum: int = 0
    agree: int = 0

    def add(self, samples: tuple[int | None, ...]) -> None:
        readable = [score for score in samples if score is not None]
        self.samples += len(samples)
        self.unreadable += len(samples) - len(readable)
        if len(readable) < 2:
            return
        sd, spread = record_spread(readable)
        self.records += 1
        self.sd_sum += sd
        self.range_sum += spread
        self.agree += spread == 0

    def result(self, model: str) -> SampleSpread:
        n = self.records
        return SampleSpread(
            model=model,
            records=n,
            samples=self.samples,
            unreadable=self.unreadable,
            mean_sd=self.sd_sum / n if n else None,
            mean_range=self.range_sum / n if n else None,
            all_agree=self.agree / n if n else None,
        )


def histogram_median(histogram: tuple[int, ...]) -> float | None:
    """The median of the scores a histogram counts (mean of the middle two when even)."""
    n = sum(histogram)
    if not n:
        return None

    def nth(i: int) -> int:  # the i-th smallest score, 0-based
        below = 0
        for score, count in zip(SCORES, histogram, strict=True):
            below += count
            if below > i:
                return score
        raise IndexError(i)

    return float(nth(n // 2)) if n % 2 else (nth(n // 2 - 1) + nth(n // 2)) / 2


@dataclass
class Summary:
    """The running counts; :meth:`feed` a stream of records, then read the results."""

    gold: Gold | None = None
    aggregates: dict[str, object] = field(default_factory=dict)
    lengths: Lengths = field(default_factory=Lengths)
    records: int = 0
    pairs: int = 0
    judges: dict[str, JudgeCounts] = field(default_factory=dict)
    tables: dict[tuple[str, str], Counter[tuple[float, float]]] = field(default_factory=dict)
    # (judges that scored the pair, did they all give the same score) -> pairs
    scored_sets: Counter[tuple[frozenset[str], bool]] = field(default_factory=Counter)
    coincidence: Coincidence = field(default_factory=Coincidence)
    incomplete: int = 0  # pairs without a record from every judge seen so far
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        if self.gold is not None:
            self.calibration = Calibration(self.gold, self.aggregates)  # type: ignore[arg-type]

    def feed(self, records: Iterable[JudgeRecord]) -> None:
        for pair in iter_pairs(self._count(records)):
            self.add_pair(pair)

    def _count(self, records: Iterable[JudgeRecord]) -> Iterator[JudgeRecord]:
        for record in records:
            self.records += 1
            judge = self.judges.get(record.model)
            if judge is None:
                judge = self.judges[record.model] = JudgeCounts()
            judge.records += 1
            if record.score is None:
                judge.errors[error_kind(record.error)] += 1
            else:
                judge.histogram[record.score] += 1
            judge.input_tokens += record.input_tokens
            judge.output_tokens += record.output_tokens
            if record.samples is not None:
                if judge.spread is None:
                    judge.spread = SpreadCounts()
                judge.spread.add(record.samples)
            yield record

    def add_pair(self, pair: PairResult) -> None:
        self.pairs += 1
        self.incomplete += pair.records < len(self.judges)
        scores = pair.scores
        order = [m for m in self.judges if m in scores]  # the file's model order
        for a, b in combinations(order, 2):
            self.tables.setdefault((a, b), Counter())[scores[a], scores[b]] += 1
        if scores:
            self.scored_sets[frozenset(scores), len(set(scores.values())) == 1] += 1
        self.coincidence.add(scores.values())
        self.lengths.add(pair)
        if self.calibration is not None:
            self.calibration.add(pair)

    # ----------------------------------------------------------------------- results

    @property
    def models(self) -> list[str]:
        return list(self.judges)

    def model_stats(self, prices: Prices | None = None) -> list[ModelStats]:
        out = []
        for model, judge in self.judges.items():
            histogram = (
                judge.histogram[1],
                judge.histogram[2],
                judge.histogram[3],
                judge.histogram[4],
                judge.histogram[5],
            )
            scored = sum(histogram)
            price = (prices or {}).get(model)
            out.append(
                ModelStats(
                    model=model,
                    count=judge.records,
                    scored=scored,
                    histogram=histogram,
                    mean=sum(s * n for s, n in zip(SCORES, histogram, strict=True)) / scored
                    if scored
                    else None,
                    median=histogram_median(histogram),
                    errors=dict(sorted(judge.errors.items(), key=lambda kv: (-kv[1], kv[0]))),
                    input_tokens=judge.input_tokens,
                    output_tokens=judge.output_tokens,
                    cost=None
                    if price is None
                    else cost(judge.input_tokens, judge.output_tokens, price),
                )
            )
        return out

    def sample_spread(self) -> list[SampleSpread]:
        """Per judge whose records carry ``samples`` (``--samples N``), in file order."""
        return [
            judge.spread.result(model)
            for model, judge in self.judges.items()
            if judge.spread is not None
        ]

    def agreements(self) -> list[Agreement]:
        out = []
        for a, b in combinations(self.models, 2):
            cells = self.tables.get((a, b), Counter())
            out.append(
                Agreement(
                    model_a=a,
                    model_b=b,
                    n=sum(cells.values()),
                    exact=cells_exact(cells),
                    kappa_quadratic=cells_kappa(cells, weights="quadratic"),
                    kappa_linear=cells_kappa(cells, weights="linear"),
                    spearman=cells_spearman(cells),
                )
            )
        return out

    def consensus(self) -> Consensus:
        everyone = frozenset(self.judges)
        return Consensus(
            models=len(everyone),
            pairs=self.pairs,
            all_scored=sum(n for (s, _), n in self.scored_sets.items() if s == everyone),
            all_agree=sum(n for (s, same), n in self.scored_sets.items() if s == everyone and same),
        )

    def table(self, a: str, b: str) -> Counter[tuple[float, float]]:
        """The (a score, b score) counts over the pairs both scored."""
        if (a, b) in self.tables:
            return self.tables[a, b]
        return Counter({(y, x): n for (x, y), n in self.tables.get((b, a), Counter()).items()})
