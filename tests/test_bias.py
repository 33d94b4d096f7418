"""Bias and reliability: length correlations, Krippendorff's alpha, disagreement review, and
streaming (counts equal the record-by-record statistics; memory does not grow with records).
"""

from __future__ import annotations

import gc
import json
import math
import random
import tracemalloc
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest
import tiktoken
from scipy.stats import pearsonr, spearmanr

from producer.curation import results
from producer.curation.bias import quintiles, token_counter
from producer.curation.report import build_report, report_from_records, report_json
from producer.curation.results import JudgeRecord, iter_pairs, load_results
from producer.curation.select import run_select
from producer.curation.stats import (
    Coincidence,
    cells_kappa,
    cells_spearman,
    cohen_kappa,
    exact_agreement,
    spearman,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 coders x
# 12 units, None where a coder gave no value. Published: nominal .743, ordinal .815,
# interval .849, ratio .797.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]
PUBLISHED = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}


def coincidence_of(data: list[list[int | None]]) -> Coincidence:
    c = Coincidence()
    for unit in zip(*data, strict=True):
        c.add([v for v in unit if v is not None])
    return c


@pytest.mark.parametrize("level", list(PUBLISHED))
def test_krippendorff_published_example(level: str) -> None:
    ours = coincidence_of(KRIPPENDORFF_2011).alpha(level)  # type: ignore[arg-type]
    assert ours is not None and round(ours, 3) == PUBLISHED[level]
    data = [[np.nan if v is None else v for v in row] for row in KRIPPENDORFF_2011]
    theirs = krippendorff.alpha(
        reliability_data=data, level_of_measurement=level, value_domain=[1, 2, 3, 4, 5]
    )
    assert ours == pytest.approx(theirs, abs=1e-12)


@pytest.mark.parametrize("seed", range(25))
def test_krippendorff_matches_the_package_on_random_data(seed: int) -> None:
    rng = random.Random(seed)
    coders, units = rng.randint(2, 5), rng.randint(3, 40)
    data: list[list[int | None]] = [
        [None if rng.random() < 0.2 else rng.randint(1, 5) for _ in range(units)]
        for _ in range(coders)
    ]
    ours = coincidence_of(data)
    array = [[np.nan if v is None else v for v in row] for row in data]
    for level in ("interval", "ordinal", "nominal"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                theirs = krippendorff.alpha(
                    reliability_data=array, level_of_measurement=level, value_domain=[1, 2, 3, 4, 5]
                )
            except (ValueError, ZeroDivisionError):
                theirs = math.nan
        value = ours.alpha(level)  # type: ignore[arg-type]
        if value is None:
            assert not math.isfinite(theirs)
        else:
            assert value == pytest.approx(theirs, abs=1e-9)


@pytest.mark.parametrize("seed", range(20))
def test_counts_equal_the_record_by_record_statistics(seed: int) -> None:
    rng = random.Random(seed)
    a = [rng.randint(1, 5) for _ in range(rng.randint(1, 50))]
    b = [min(5, max(1, x + rng.choice([-2, -1, 0, 0, 1]))) for x in a]
    cells = Counter(zip(a, b, strict=True))
    for weights in ("quadratic", "linear", None):
        assert cells_kappa(cells, weights=weights) == pytest.approx(  # type: ignore[arg-type]
            cohen_kappa(a, b, weights=weights)  # type: ignore[arg-type]
        )
    ours, listed = cells_spearman(cells), spearman(a, b)
    assert (ours is None and listed is None) or ours == pytest.approx(listed)
    report = report_from_records(
        [
            JudgeRecord(f"q{i}", "g", m, s)
            for i, p in enumerate(zip(a, b, strict=True))
            for m, s in zip("ab", p, strict=True)
        ],  # fmt: skip
        tokens=False,
    )
    (agreement,) = report.agreements
    assert agreement.exact == exact_agreement(a, b)


def test_length_correlations_match_scipy_and_tiktoken() -> None:
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "δέλτα", "émoji 🎉", "x"]
    records = []
    for i in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 40)))
        score = min(5, 1 + len(text) // 40 + rng.randint(0, 1))  # longer, higher: a bias
        records.append(JudgeRecord(f"q{i}", text, "judge", score))
        records.append(JudgeRecord(f"q{i}", text, "other", rng.randint(1, 5)))
    biased = {
        (e["model"], e["unit"]): e for e in report_json(report_from_records(records))["length_bias"]
    }
    encoding = tiktoken.get_encoding("o200k_base")
    for model in ("judge", "other"):
        scores = [r.score for r in records if r.model == model]
        gens = [r.generation for r in records if r.model == model]
        for unit, lengths in (
            ("chars", [len(g) for g in gens]),
            ("tokens", [len(encoding.encode_ordinary(g)) for g in gens]),
        ):
            entry = biased[model, unit]
            assert entry["records"] == 300
            assert entry["pearson"] == pytest.approx(pearsonr(lengths, scores).statistic)
            assert entry["spearman"] == pytest.approx(spearmanr(lengths, scores).statistic)
            bins = pd.qcut(pd.Series(lengths), 5, duplicates="drop")
            means = pd.Series(scores).groupby(bins, observed=False).mean().tolist()
            assert [b["mean_score"] for b in entry["quintiles"]] == pytest.approx(means)
    assert biased["judge", "chars"]["spearman"] > 0.8  # the bias we built in shows
    assert abs(biased["other", "chars"]["spearman"]) < 0.2


def test_quintiles_by_hand() -> None:
    # lengths 1..10, score = 1 for the short half, 5 for the long half
    cells = Counter({(n, 1 if n <= 5 else 5): 1 for n in range(1, 11)})
    bins = quintiles(cells)
    assert [b.n for b in bins] == [2, 2, 2, 2, 2]
    assert [b.mean_score for b in bins] == [1, 1, 3, 5, 5]  # the middle bin holds 5 and 6


def test_token_counter_is_offline_o200k() -> None:
    count = token_counter()
    assert count is not None
    assert count("Hello, world!") == len(
        tiktoken.get_encoding("o200k_base").encode("Hello, world!")
    )


def test_disagreement_rows(tmp_path: Path) -> None:
    rows = []
    for i, scores in enumerate([(5, 1, 3), (4, 4, None), (2, 5, 4), (3, 3, 3)]):
        for model, score in zip(("a", "b", "c"), scores, strict=True):
            rows.append(
                {
                    "reasoning": None if score is None else f"{model} thinks {score}",
                    "score": None if score is None else str(score),
                    "instruction": f"q{i}",
                    "generation": "g",
                    "model": model,
                    "id": i,
                    **({"error": "server: HTTP 503"} if score is None else {}),
                }
            )
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "review.jsonl"
    assert run_select(str(path), min_score=None, output=str(out), disagreement=3) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    # spreads: 4, 0, 3, 0 -> pairs 0 and 2
    assert written == [
        {
            "instruction": "q0",
            "generation": "g",
            "id": 0,
            "scores": {"a": 5, "b": 1, "c": 3},
            "reasoning": {"a": "a thinks 5", "b": "b thinks 1", "c": "c thinks 3"},
            "aggregate": {"agg": "spread", "value": 4},
        },
        {
            "instruction": "q2",
            "generation": "g",
            "id": 2,
            "scores": {"a": 2, "b": 5, "c": 4},
            "reasoning": {"a": "a thinks 2", "b": "b thinks 5", "c": "c thinks 4"},
            "aggregate": {"agg": "spread", "value": 3},
        },
    ]
    assert run_select(str(path), min_score=None, output=str(out), disagreement=5) == 2


def test_json_array_streams_in_chunks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    rows = [
        {
            "reasoning": "r",
            "score": str(1 + i % 5),
            "instruction": "é\n" * (i % 4),
            "generation": "g" * i,
            "model": "m",
            "n": 10**12 + i,
        }  # fmt: skip
        for i in range(300)
    ]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    whole = load_results(str(path))
    monkeypatch.setattr(results, "CHUNK", 7)  # elements, numbers and UTF-8 cut across reads
    chunked = load_results(str(path))
    assert chunked == whole
    assert [r.fields["n"] for r in chunked] == [10**12 + i for i in range(300)]
    lines = path.read_text().split("\n")
    assert all(lines[r.line - 1].strip() == "{" for r in chunked)  # type: ignore[operator]


def test_pairs_are_consecutive_records() -> None:
    recs = [JudgeRecord("q", "g", m, 5) for m in ("a", "b", "a", "b")]
    assert [p.scores for p in iter_pairs(recs)] == [{"a": 5, "b": 5}, {"a": 5, "b": 5}]


def write_results(path: Path, pairs: int) -> None:
    rng = random.Random(pairs)
    with path.open("w") as handle:
        for i in range(pairs):
            generation = "word " * rng.randint(1, 60)
            for model in ("judge-a", "judge-b"):
                score = rng.randint(1, 5)
                handle.write(
                    json.dumps(
                        {
                            "reasoning": "ok",
                            "score": str(score),
                            "instruction": f"question {i}",
                            "generation": generation,
                            "model": model,
                        }
                    )
                    + "\n"
                )


def peak(run: Callable[[], object]) -> int:
    """The most memory Python held while ``run`` ran."""
    gc.collect()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_records(tmp_path: Path) -> None:
    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    # Kept small to stay fast under tracemalloc (a traced record costs ~0.15 ms)
    write_results(small, 1_500)  # 3,000 records
    write_results(large, 15_000)  # 30,000 records
    out = str(tmp_path / "kept.jsonl")

    def report(path: Path) -> Callable[[], object]:
        return lambda: build_report(str(path), tokens=False)

    def select(path: Path) -> Callable[[], object]:
        return lambda: run_select(str(path), min_score=5, agg="min", output=out)

    report(small)(), select(small)()  # imports and first-use caches, before measuring
    # 10x the records: the peak stays within a small factor (a list of records would be 10x)
    small_peak, large_peak = peak(report(small)), peak(report(large))
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)
    small_peak, large_peak = peak(select(small)), peak(select(large))
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)
    assert len(Path(out).read_text().splitlines()) > 100  # it did select
