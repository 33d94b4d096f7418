"""producer.curation.stats: hand-computed examples, then cross-checks against scipy and sklearn."""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from producer.curation.results import JudgeRecord, error_kind, parse_record
from producer.curation.stats import (
    average_ranks,
    cohen_kappa,
    consensus,
    cost,
    exact_agreement,
    group_pairs,
    histogram,
    mean,
    median,
    model_stats,
    pairwise_agreement,
    spearman,
)
from workers.errors import InputError

LABELS = [1, 2, 3, 4, 5]

# The running example: two judges on four pairs.
#   a = [5, 1, 5, 3]
#   b = [5, 2, 4, 3]
A = [5, 1, 5, 3]
B = [5, 2, 4, 3]


def sk_kappa(a: Sequence[int], b: Sequence[int], weights: str | None) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cohen_kappa_score(a, b, labels=LABELS, weights=weights))


def sp_rho(a: Sequence[float], b: Sequence[float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a, b).statistic)


# --------------------------------------------------------------------------- by hand


def test_exact_agreement_by_hand() -> None:
    # equal at positions 1 and 4 of 4
    assert exact_agreement(A, B) == 0.5
    assert exact_agreement([], []) is None


def test_quadratic_kappa_by_hand() -> None:
    # observed: mean of (a_i - b_i)^2 = (0 + 1 + 1 + 0) / 4 = 0.5
    # expected: mean over all 16 (a_i, b_j) of (a_i - b_j)^2
    #   a=5: (0, 9, 1, 4) = 14;  a=1: (16, 1, 9, 4) = 30;  a=5: 14;  a=3: (4, 1, 1, 0) = 6
    #   (14 + 30 + 14 + 6) / 16 = 64 / 16 = 4
    # kappa = 1 - 0.5 / 4 = 0.875
    assert cohen_kappa(A, B) == pytest.approx(0.875, abs=1e-12)


def test_linear_kappa_by_hand() -> None:
    # observed: mean |a_i - b_i| = (0 + 1 + 1 + 0) / 4 = 0.5
    # expected: a=5: (0, 3, 1, 2) = 6;  a=1: (4, 1, 3, 2) = 10;  a=5: 6;  a=3: (2, 1, 1, 0) = 4
    #   26 / 16 = 1.625
    # kappa = 1 - 0.5 / 1.625 = 9/13
    assert cohen_kappa(A, B, weights="linear") == pytest.approx(9 / 13, abs=1e-12)


def test_unweighted_kappa_by_hand() -> None:
    # observed agreement p_o = 2/4; marginals a: {5: 2, 1: 1, 3: 1}, b: {5, 2, 4, 3} once each
    # p_e = sum_k p_a(k) p_b(k) = (2/4)(1/4) [k=5] + (1/4)(1/4) [k=3] = 3/16
    # kappa = (1/2 - 3/16) / (1 - 3/16) = (5/16) / (13/16) = 5/13
    assert cohen_kappa(A, B, weights=None) == pytest.approx(5 / 13, abs=1e-12)


def test_average_ranks_by_hand() -> None:
    # sorted: 1 (rank 1), 3 (rank 2), 5, 5 (ranks 3 and 4, average 3.5)
    assert average_ranks(A) == [3.5, 1.0, 3.5, 2.0]
    assert average_ranks([2, 2, 2]) == [2.0, 2.0, 2.0]
    assert average_ranks([]) == []


def test_spearman_by_hand() -> None:
    # ranks a = [3.5, 1, 3.5, 2], b = [4, 1, 3, 2]; both have mean 2.5
    # deviations a: [1, -1.5, 1, -0.5], b: [1.5, -1.5, 0.5, -0.5]
    # sum(da*db) = 1.5 + 2.25 + 0.5 + 0.25 = 4.5; sum(da^2) = 4.5; sum(db^2) = 5
    # rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert spearman(A, B) == pytest.approx(math.sqrt(0.9), abs=1e-12)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_undefined_statistics_are_none_not_errors() -> None:
    assert spearman([3, 3, 3], [1, 2, 3]) is None  # constant input
    assert spearman([4], [5]) is None  # a single point
    assert spearman([], []) is None
    assert cohen_kappa([], []) is None
    # both judges always say 4: perfect agreement, but kappa = 0/0
    assert cohen_kappa([4, 4, 4], [4, 4, 4]) is None
    # one constant judge: observed disagreement equals the expected one, kappa = 0
    assert cohen_kappa([4, 4, 4], [1, 4, 5]) == pytest.approx(0.0)


def test_length_mismatch_and_unknown_category_raise() -> None:
    with pytest.raises(ValueError, match="length"):
        spearman([1, 2], [1])
    with pytest.raises(ValueError, match="not one of"):
        cohen_kappa([1, 6], [1, 2])


def test_mean_median_histogram() -> None:
    assert mean([5, 1, 4, 5, 3]) == pytest.approx(3.6)
    assert median([5, 1, 4, 5, 3]) == 4.0
    assert median([5, 2, 4, 3]) == 3.5  # (3 + 4) / 2
    assert mean([]) is None and median([]) is None
    assert histogram([5, 1, 4, 5, 3]) == (1, 0, 1, 1, 2)


def test_cost() -> None:
    # 600 input tokens at $0.15/M + 150 output tokens at $0.60/M = 0.00009 + 0.00009
    assert cost(600, 150, (0.15, 0.6)) == pytest.approx(0.00018)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("rate_limit: HTTP 429 Too Many Requests after 7 attempts", "rate_limit"),
        ("auth: HTTP 401 invalid key", "auth"),
        ("unparseable reply: no score found", "unparseable reply"),
        ("input: empty generation", "input"),
        ("timeout", "timeout"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_error_kind(error: str | None, kind: str) -> None:
    assert error_kind(error) == kind


# --------------------------------------------------------------------------- records and pairs


def rec(ins: str, model: str, score: int | None, error: str | None = None) -> JudgeRecord:
    return JudgeRecord(ins, "gen", model, score, error)


def test_parse_record_validates_and_locates() -> None:
    good = {"reasoning": "r", "score": "4", "instruction": "i", "generation": "g", "model": "m"}
    record = parse_record({**good, "input_tokens": 10}, source="f.jsonl", line=3)
    assert (record.score, record.input_tokens, record.output_tokens) == (4, 10, 0)
    err = parse_record(
        {**good, "score": None, "reasoning": None, "error": "auth: HTTP 401"}, source="f", line=1
    )
    assert err.score is None and err.error_kind == "auth"

    cases = [
        ({k: v for k, v in good.items() if k != "model"}, "model", "missing"),
        ({**good, "score": "6"}, "score", '"1".."5"'),
        ({**good, "score": True}, "score", '"1".."5"'),
        ({**good, "generation": 3}, "generation", "must be a string, got number"),
        ({**good, "output_tokens": -1}, "output_tokens", "non-negative"),
    ]
    for raw, field, message in cases:
        with pytest.raises(InputError, match=message) as info:
            parse_record(raw, source="f.jsonl", line=7)
        assert (info.value.source, info.value.line, info.value.field) == ("f.jsonl", 7, field)
    with pytest.raises(InputError, match="expected a JSON object, got array"):
        parse_record([1], source="f.jsonl", line=2)


def test_duplicate_pairs_stay_separate() -> None:
    # The pair "q" appears twice in the input, so each judge has two records for it:
    # the n-th record of (q, gen, model) belongs to occurrence n.
    records = [
        rec("q", "a", 5),
        rec("q", "b", 4),
        rec("r", "a", 1),
        rec("r", "b", 1),
        rec("q", "a", 2),
        rec("q", "b", None, "rate_limit: HTTP 429"),
    ]
    pairs = group_pairs(records)
    assert [(p.instruction, p.occurrence) for p in pairs] == [("q", 1), ("r", 1), ("q", 2)]
    assert pairs[0].scores == {"a": 5, "b": 4}
    assert pairs[2].scores == {"a": 2} and pairs[2].errors == {"b": "rate_limit"}


def test_model_stats_and_agreement_by_hand() -> None:
    # a: 5 1 5 3 err(auth) ; b: 5 2 4 3 err(rate_limit)
    records = []
    for i, (x, y) in enumerate(zip([*A, None], [*B, None], strict=True)):
        records.append(rec(f"p{i}", "a", x, "auth: HTTP 401"))
        records.append(rec(f"p{i}", "b", y, "rate_limit: HTTP 429"))
    stats = model_stats(records, {"a": (1.0, 2.0)})
    assert [s.model for s in stats] == ["a", "b"]
    a = stats[0]
    assert (a.count, a.scored, a.error_count) == (5, 4, 1)
    assert a.histogram == (1, 0, 1, 0, 2)
    assert a.mean == pytest.approx(3.5) and a.median == 4.0  # [1, 3, 5, 5]
    assert a.errors == {"auth": 1} and a.error_share == {"auth": 0.2}
    assert a.cost == 0.0 and stats[1].cost is None

    pairs = group_pairs(records)
    (ab,) = pairwise_agreement(pairs, ["a", "b"])
    assert ab.n == 4 and ab.exact == 0.5
    assert ab.kappa_quadratic == pytest.approx(0.875)
    assert ab.kappa_linear == pytest.approx(9 / 13)
    assert ab.spearman == pytest.approx(math.sqrt(0.9))
    c = consensus(pairs, ["a", "b"])
    assert (c.pairs, c.all_scored, c.all_agree) == (5, 4, 2)


# --------------------------------------------------------------------------- cross-checks

scores = st.integers(min_value=1, max_value=5)
paired = st.integers(min_value=1, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(scores, min_size=n, max_size=n), st.lists(scores, min_size=n, max_size=n)
    )
)


@settings(max_examples=150, deadline=None)
@given(paired)
def test_kappa_matches_sklearn(ab: tuple[list[int], list[int]]) -> None:
    a, b = ab
    for weights in ("quadratic", "linear", None):
        ours = cohen_kappa(a, b, weights=weights)  # type: ignore[arg-type]
        theirs = sk_kappa(a, b, weights)
        if ours is None:
            assert math.isnan(theirs)
        else:
            assert ours == pytest.approx(theirs, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(paired)
def test_spearman_matches_scipy(ab: tuple[list[int], list[int]]) -> None:
    a, b = ab
    ours = spearman(a, b)
    if len(a) < 2:
        assert ours is None
        return
    theirs = sp_rho(a, b)
    if ours is None:
        assert math.isnan(theirs)
    else:
        assert ours == pytest.approx(theirs, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-1e3, 1e3, allow_nan=False).map(lambda v: round(v, 1)),
            st.floats(-1e3, 1e3, allow_nan=False).map(lambda v: round(v, 1)),
        ),
        min_size=2,
        max_size=30,
    )
)
def test_spearman_matches_scipy_on_floats_with_ties(points: list[tuple[float, float]]) -> None:
    a = [p[0] for p in points]
    b = [p[1] for p in points]
    ours = spearman(a, b)
    theirs = sp_rho(a, b)
    assert (ours is None) == math.isnan(theirs)
    if ours is not None:
        assert ours == pytest.approx(theirs, abs=1e-9)


def test_large_seeded_samples_match() -> None:
    rng = random.Random(20240601)
    for _ in range(20):
        n = rng.randint(50, 500)
        a = [rng.randint(1, 5) for _ in range(n)]
        b = [min(5, max(1, x + rng.choice([-2, -1, 0, 0, 1]))) for x in a]
        assert cohen_kappa(a, b) == pytest.approx(sk_kappa(a, b, "quadratic"), abs=1e-9)
        assert cohen_kappa(a, b, weights="linear") == pytest.approx(
            sk_kappa(a, b, "linear"), abs=1e-9
        )
        assert spearman(a, b) == pytest.approx(sp_rho(a, b), abs=1e-9)


def test_kappa_uses_score_distance_not_label_position() -> None:
    # Scores 1, 2, 5 only: sklearn without labels=[1..5] weighs 2 vs 5 as 1 position apart
    # (the same as 1 vs 2); we (and sklearn with labels) as 3 score points apart.
    a, b = [1, 2, 5, 5, 1], [2, 2, 5, 1, 1]
    assert cohen_kappa(a, b) == pytest.approx(sk_kappa(a, b, "quadratic"), abs=1e-12)
    plain = float(cohen_kappa_score(a, b, weights="quadratic"))
    assert cohen_kappa(a, b) != pytest.approx(plain)
