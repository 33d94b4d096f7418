"""producer.curation.select: Humpback-style selection by aggregated judge score.

On ``tests/data/report/three_judges.json`` (see test_report.py for the table) the scores of
the judges that scored each pair, and their aggregates, are:

    pair                         scores     mean    min/all  median
    1 3x20 / "It's 60."          5 5 4      4.667   4        5
    2 3x20 / "It's 59."          1 2 1      1.333   1        1
    3 prime / "7"                4 4        4       4        4      (B: rate_limit)
    4 3x20 / "It's 60." (again)  5 4        4.5     4        4.5    (C: unparseable)
    5 capital / ""               -          -       -        -      (all: input error)
    6 haiku                      3 3 3      3       3        3

so pairs kept for K = 1..5 are
    mean:    5 4 4 3 0
    min/all: 5 4 4 3 0
    median:  5 4 4 3 1
with 1 pair excluded (no judge scored pair 5), 5 error records in 3 pairs (3, 4, 5).
(``all`` is an alias of ``min``: both leave a judge's error record out.)
"""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from producer.curation.results import JudgeRecord, load_results
from producer.curation.select import print_selection, run_select, select
from workers.errors import InputError

DATA = Path(__file__).parent / "data" / "report"
THREE = str(DATA / "three_judges.json")
A, B, C = "gpt-4o-mini", "claude-3-5-haiku-latest", "openai/llama3.1:8b"
SIXTY = {"instruction": "What is 3 times 20?", "generation": "It's 60."}
PRIME = {"instruction": "Name a prime number.", "generation": "7"}


def texts(kept: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kept pairs without their scores: what the pair was."""
    return [{"instruction": p["instruction"], "generation": p["generation"]} for p in kept]


@pytest.mark.parametrize(
    ("agg", "passed"),
    [
        ("mean", [5, 4, 4, 3, 0]),
        ("min", [5, 4, 4, 3, 0]),
        ("all", [5, 4, 4, 3, 0]),
        ("median", [5, 4, 4, 3, 1]),
    ],
)
def test_thresholds_by_hand(agg: str, passed: list[int]) -> None:
    selection = select(load_results(THREE), min_score=4, agg=agg)
    assert [selection.passed[k] for k in range(1, 6)] == passed
    assert selection.pairs == 6
    assert selection.unscored_pairs == 1
    assert selection.scored_pairs == 5
    assert selection.pairs_with_errors == 3
    assert selection.error_records == 5
    assert len(selection.kept) == passed[3]


def test_kept_pairs_in_input_order_with_duplicates() -> None:
    # mean >= 4: pairs 1 (4.67), 3 (4.0), 4 (4.5). Pair 4 repeats pair 1's texts and is kept
    # on its own scores, so the output has that pair twice, as the input did.
    selection = select(load_results(THREE), min_score=4, agg="mean")
    assert texts(selection.kept) == [SIXTY, PRIME, SIXTY]
    # median >= 5: only pair 1 (5 5 4 -> 5); pair 4 (5 4 -> 4.5) is not kept
    assert texts(select(load_results(THREE), min_score=5, agg="median").kept) == [SIXTY]


def test_kept_pairs_carry_their_scores() -> None:
    # The scores that justify each kept pair, judges in file order, failed judges absent.
    kept = select(load_results(THREE), min_score=4, agg="mean").kept
    assert kept == [
        {**SIXTY, "scores": {A: 5, B: 5, C: 4}, "aggregate": {"agg": "mean", "value": 14 / 3}},
        {**PRIME, "scores": {A: 4, C: 4}, "aggregate": {"agg": "mean", "value": 4.0}},
        {**SIXTY, "scores": {A: 5, B: 4}, "aggregate": {"agg": "mean", "value": 4.5}},
    ]
    median = select(load_results(THREE), min_score=5, agg="median").kept
    assert median[0]["aggregate"] == {"agg": "median", "value": 5.0}


def test_input_fields_are_carried_from_the_first_record() -> None:
    def record(model: str, score: str | None, **extra: Any) -> dict[str, Any]:
        return {
            "reasoning": None if score is None else "fine",
            "score": score,
            "instruction": "q",
            "generation": "g",
            "model": model,
            **extra,
        }

    rows = [
        record("a", "5", id="p1", source="web", meta={"lang": "en"}, input_tokens=3),
        record("b", None, id="p1", source="web", error="unparseable reply: x", raw="?", _kind="u"),
        record("c", "4", id="other", source="web", scores="input field", output_tokens=2),
    ]
    kept = select(rows, min_score=4, agg="min").kept
    # id/source/meta from the first record; judge keys (reasoning, score, model, error, raw,
    # tokens) and internal "_" keys are the judges', not the pair's; "scores" is ours.
    expected = {
        "instruction": "q",
        "generation": "g",
        "id": "p1",
        "source": "web",
        "meta": {"lang": "en"},
        "scores": {"a": 5, "c": 4},
        "aggregate": {"agg": "min", "value": 4},
    }
    assert kept == [expected]
    assert list(kept[0]) == list(expected)  # the key order too


def test_all_is_an_alias_of_min() -> None:
    # Judge b failed on q: "all" does not demand that every judge scored the pair; like
    # "min", it keeps q on a's 5 alone. The output names the rule "min" either way.
    records = [
        JudgeRecord("q", "g", "a", 5),
        JudgeRecord("q", "g", "b", None, "rate_limit: HTTP 429"),
        JudgeRecord("r", "g", "a", 5),
        JudgeRecord("r", "g", "b", 4),
    ]
    by_min = select(records, min_score=5, agg="min")
    by_all = select(records, min_score=5, agg="all")
    assert by_all.kept == by_min.kept
    assert by_all.kept == [
        {
            "instruction": "q",
            "generation": "g",
            "scores": {"a": 5},
            "aggregate": {"agg": "min", "value": 5},
        }
    ]
    assert by_all.passed == by_min.passed
    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_selection(by_all, console)
    legend = console.file.getvalue()  # type: ignore[attr-defined]
    assert "--agg all = min: every judge that scored the pair gave >= K" in legend
    assert "neither keeps nor vetoes" in legend


def test_errored_judge_neither_keeps_nor_vetoes() -> None:
    records = [
        JudgeRecord("q", "g", "a", 5),
        JudgeRecord("q", "g", "b", None, "auth: HTTP 401"),
        JudgeRecord("r", "g", "a", 5),
        JudgeRecord("r", "g", "b", 2),
    ]
    for agg in ("mean", "min", "all", "median"):
        selection = select(records, min_score=5, agg=agg)
        assert texts(selection.kept) == [{"instruction": "q", "generation": "g"}]
        assert (selection.pairs_with_errors, selection.error_records) == (1, 1)


def test_accepts_result_dicts() -> None:
    rows = json.loads(Path(THREE).read_text())
    assert texts(select(rows, min_score=4, agg="mean").kept) == [SIXTY, PRIME, SIXTY]
    with pytest.raises(InputError, match="<python>:2: field 'score'"):
        select([rows[0], {**rows[1], "score": "five"}], min_score=4, agg="mean")


@pytest.mark.parametrize(
    ("min_score", "agg", "source"),
    [(0, "mean", "--min-score"), (6, "mean", "--min-score"), (3, "max", "--agg")],
)
def test_bad_options(min_score: int, agg: str, source: str) -> None:
    with pytest.raises(InputError) as info:
        select([], min_score=min_score, agg=agg)
    assert info.value.source == source
    assert run_select(THREE, min_score=min_score, agg=agg, output=None) == 2


def reference(pairs: list[list[int | None]], agg: str, k: int) -> list[int]:
    """Brute force: indexes of pairs whose non-error scores aggregate to >= k."""
    functions: dict[str, Any] = {
        "mean": statistics.mean,
        "median": statistics.median,
        "min": min,
        "all": lambda s: k if all(x >= k for x in s) else 0,
    }
    kept = []
    for i, scores in enumerate(pairs):
        scored = [s for s in scores if s is not None]
        if scored and functions[agg](scored) >= k:
            kept.append(i)
    return kept


judged = st.lists(
    st.lists(st.one_of(st.none(), st.integers(1, 5)), min_size=3, max_size=3),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(judged, st.sampled_from(["mean", "min", "all", "median"]), st.integers(1, 5))
def test_matches_brute_force(pairs: list[list[int | None]], agg: str, k: int) -> None:
    records = [
        JudgeRecord(f"q{i}", "g", f"m{j}", score, None if score else "server: HTTP 503")
        for i, scores in enumerate(pairs)
        for j, score in enumerate(scores)
    ]
    selection = select(records, min_score=k, agg=agg)
    assert texts(selection.kept) == [
        {"instruction": f"q{i}", "generation": "g"} for i in reference(pairs, agg, k)
    ]
    for threshold in range(1, 6):
        assert selection.passed[threshold] == len(reference(pairs, agg, threshold))
    assert all(selection.passed[t] >= selection.passed[t + 1] for t in range(1, 5))
    assert selection.unscored_pairs == sum(all(s is None for s in p) for p in pairs)
    assert selection.error_records == sum(s is None for p in pairs for s in p)


def test_run_select_writes_jsonl_json_and_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "kept.jsonl"
    assert run_select(THREE, min_score=4, agg="mean", output=str(out)) == 0
    lines = out.read_text().splitlines()
    assert texts([json.loads(line) for line in lines]) == [SIXTY, PRIME, SIXTY]
    assert json.loads(lines[1])["scores"] == {A: 4, C: 4}
    err = " ".join(capsys.readouterr().err.split())
    assert "Pairs kept by threshold" in err
    assert "1 excluded because no judge scored them" in err
    assert "5 error records in 3 pairs" in err
    assert f"wrote 3 of 6 pairs to {out}" in err

    as_json = tmp_path / "kept.json"
    assert run_select(THREE, min_score=5, agg="median", output=str(as_json)) == 0
    assert texts(json.loads(as_json.read_text())) == [SIXTY]

    capsys.readouterr()
    assert run_select(THREE, min_score=4, agg="min", output="-") == 0
    captured = capsys.readouterr()
    kept = [json.loads(line) for line in captured.out.splitlines()]
    assert texts(kept) == [SIXTY, PRIME, SIXTY]
    assert [pair["aggregate"] for pair in kept] == [{"agg": "min", "value": 4}] * 3
    assert "Pairs kept" in captured.err and "Pairs kept" not in captured.out


def test_run_select_bad_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(DATA / "bad_score.jsonl")
    assert run_select(path, min_score=4, agg="mean", output=None) == 2
    captured = capsys.readouterr()
    assert f"{path}:2: field 'score'" in captured.err.replace("\n", "")
    assert captured.out == ""
