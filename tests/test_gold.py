"""Calibration against human labels (``--gold``): by hand, then against sklearn and SciPy.

``tests/data/report/gold_three.jsonl`` labels four of the texts of ``three_judges.json`` (see
test_report.py for its table) and one text that is not in it:

    pair                         A   B    C    human
    1 3x20 / "It's 60."          5   5    4    4
    2 3x20 / "It's 59."          1   2    1    1
    3 prime / "7"                4   err  4    5
    4 3x20 / "It's 60." (again)  5   4    err  4      (same text as pair 1: same label)
    6 haiku                      3   3    3    3

so 4 of 5 gold rows match, and 5 results pairs are labelled.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_score, recall_score

from producer.curation.gold import fit, load_gold, recommend, threshold
from producer.curation.report import build_report, report_json, run_report
from producer.curation.select import AGGREGATES, run_select
from workers.errors import InputError

DATA = Path(__file__).parent / "data" / "report"
THREE = str(DATA / "three_judges.json")
GOLD = str(DATA / "gold_three.jsonl")
A, B, C = "gpt-4o-mini", "claude-3-5-haiku-latest", "openai/llama3.1:8b"
LABELS = [1, 2, 3, 4, 5]


def report_with_gold(gold: str = GOLD) -> dict:  # type: ignore[type-arg]
    return report_json(build_report(THREE, gold=gold, tokens=False))


def by_name(entries: list[dict], name: str) -> dict:  # type: ignore[type-arg]
    return next(entry for entry in entries if entry["name"] == name)


def test_matching_counts() -> None:
    cal = report_with_gold()["calibration"]
    assert (cal["gold_rows"], cal["matched_rows"], cal["unmatched_rows"]) == (5, 4, 1)
    assert cal["matched_pairs"] == 5


def test_judge_a_by_hand() -> None:
    a = by_name(report_with_gold()["calibration"]["judges"], A)
    # (judge, human): (5,4) (1,1) (4,5) (5,4) (3,3)
    assert a["pairs"] == 5
    assert a["exact"] == pytest.approx(2 / 5)
    assert a["mean_offset"] == pytest.approx((1 + 0 - 1 + 1 + 0) / 5)
    # quadratic: observed sum w = 3; expected sum w*rows*cols = 103 (by hand): 1 - 3*5/103
    assert a["kappa_quadratic"] == pytest.approx(1 - 15 / 103)
    expected = [[0] * 5 for _ in range(5)]
    for judge, human in [(5, 4), (1, 1), (4, 5), (5, 4), (3, 3)]:
        expected[judge - 1][human - 1] += 1
    assert a["confusion"] == expected
    k4, k5 = a["thresholds"][3], a["thresholds"][4]
    # K=4: judge keeps pairs 1, 3, 4; people rate 1, 3, 4 >= 4: all right
    assert (k4["kept"], k4["relevant"], k4["hits"], k4["precision"], k4["recall"]) == (
        3,
        3,
        3,
        1.0,
        1.0,
    )
    # K=5: judge keeps 1 and 4 (people: 4), people rate only 3 as 5 (judge: 4)
    assert (k5["kept"], k5["relevant"], k5["hits"], k5["precision"], k5["recall"]) == (
        2,
        1,
        0,
        0.0,
        0.0,
    )


def test_error_records_are_left_out() -> None:
    cal = report_with_gold()["calibration"]
    assert by_name(cal["judges"], B)["pairs"] == 4  # rate_limit on pair 3
    assert by_name(cal["judges"], C)["pairs"] == 4  # unparseable on pair 4


def test_aggregates_by_hand() -> None:
    cal = report_with_gold()["calibration"]
    mean = by_name(cal["aggregates"], "mean")
    # mean values 14/3, 4/3, 4, 4.5, 3 -> floor 4, 1, 4, 4, 3 against 4, 1, 5, 4, 3
    assert mean["exact"] == pytest.approx(4 / 5)
    offsets = [14 / 3 - 4, 4 / 3 - 1, 4 - 5, 4.5 - 4, 3 - 3]
    assert mean["mean_offset"] == pytest.approx(sum(offsets) / 5)
    minimum = by_name(cal["aggregates"], "min")
    assert [t["kept"] for t in minimum["thresholds"]] == [5, 4, 4, 3, 0]
    assert [entry["name"] for entry in cal["aggregates"]] == list(AGGREGATES)


def sk(judge: list[float], human: list[int]) -> dict[str, object]:
    """Every statistic from sklearn / SciPy on the raw values."""
    floor = [math.floor(v) for v in judge]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out: dict[str, object] = {
            "exact": sum(x == y for x, y in zip(floor, human, strict=True)) / len(human),
            "kappa_quadratic": cohen_kappa_score(floor, human, labels=LABELS, weights="quadratic"),
            "kappa_linear": cohen_kappa_score(floor, human, labels=LABELS, weights="linear"),
            "spearman": spearmanr(judge, human).statistic,
            "confusion": confusion_matrix(floor, human, labels=LABELS).tolist(),
            "offset": sum(v - h for v, h in zip(judge, human, strict=True)) / len(human),
        }
        for k in LABELS:
            predicted = [v >= k for v in judge]
            actual = [h >= k for h in human]
            out[f"p{k}"] = precision_score(actual, predicted, zero_division=math.nan)
            out[f"r{k}"] = recall_score(actual, predicted, zero_division=math.nan)
    return out


def same(ours: float | None, theirs: object) -> bool:
    if ours is None:
        return theirs is None or (isinstance(theirs, float) and math.isnan(theirs))
    return isinstance(theirs, int | float) and math.isclose(ours, theirs, abs_tol=1e-9)


@pytest.mark.parametrize("seed", range(40))
def test_fit_matches_sklearn_and_scipy(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(2, 60)
    human = [rng.randint(1, 5) for _ in range(n)]
    if seed % 2:  # an aggregate: fractional values
        judge: list[float] = [rng.choice([1, 4 / 3, 2.5, 3, 11 / 3, 4.5, 5]) for _ in range(n)]
    else:
        judge = [min(5, max(1, h + rng.choice([-1, 0, 0, 1, 2]))) for h in human]
    entry = fit("j", Counter(zip(judge, human, strict=True)))
    ref = sk(judge, human)
    assert entry.n == n
    assert same(entry.exact, ref["exact"])
    assert same(entry.kappa_quadratic, ref["kappa_quadratic"])
    assert same(entry.kappa_linear, ref["kappa_linear"])
    assert same(entry.spearman, ref["spearman"])
    assert same(entry.offset, ref["offset"])
    assert entry.confusion == ref["confusion"]
    for t in entry.thresholds:
        assert same(t.precision, ref[f"p{t.k}"]), t
        assert same(t.recall, ref[f"r{t.k}"]), t


def test_recommend_by_hand() -> None:
    # judge vs human: (5,5) (5,4) (4,4) (4,2) (3,3) (2,1)
    cells = Counter([(5, 5), (5, 4), (4, 4), (4, 2), (3, 3), (2, 1)])
    ts = [threshold(cells, k) for k in LABELS]
    # K=2: kept 6, human >= 2: 5; K=3: kept 5, hits 4 -> 0.8; K=4: 4, 3 -> 0.75; K=5: 2, 1
    assert [t.precision for t in ts] == [1.0, 5 / 6, 0.8, 0.75, 0.5]
    # against "human >= K", K=1 is trivially precise: hence a fixed human bar for choosing
    assert recommend(ts, 0.99) == ts[0]
    bar = [threshold(cells, k, human_min=4) for k in LABELS]
    # people rate 3 pairs >= 4; kept 6 6 5 4 2 of which good 3 3 3 3 2
    assert [t.precision for t in bar] == [0.5, 0.5, 0.6, 0.75, 1.0]
    assert [t.recall for t in bar] == [1.0, 1.0, 1.0, 1.0, 2 / 3]
    assert recommend(bar, 0.7) == bar[3]
    assert recommend(bar, 0.9) == bar[4]
    assert recommend(bar[:4], 0.9) is None


def test_matching_by_id_when_both_have_one(tmp_path: Path) -> None:
    rows = [
        {
            "reasoning": "r",
            "score": s,
            "instruction": "same",
            "generation": "same",
            "model": m,
            "id": f"p{i}",
        }  # fmt: skip
        for i, pair in enumerate([(5, 4), (1, 2), (3, 3)])
        for m, s in zip(("a", "b"), map(str, pair), strict=True)
    ]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gold = tmp_path / "g.jsonl"
    gold.write_text('{"id": "p0", "score": 5}\n{"id": "p2", "score": 1}\n{"id": "x", "score": 1}\n')
    cal = report_json(build_report(str(results), gold=str(gold), tokens=False))["calibration"]
    assert (cal["matched_rows"], cal["unmatched_rows"], cal["matched_pairs"]) == (2, 1, 2)
    assert by_name(cal["judges"], "a")["confusion"][4][4] == 1  # p0: a gave 5, people 5
    assert by_name(cal["judges"], "b")["confusion"][2][0] == 1  # p2: b gave 3, people 1


def test_parquet_gold_equals_jsonl(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in Path(GOLD).read_text().splitlines()]
    path = tmp_path / "gold.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    assert report_with_gold(str(path))["calibration"] == {
        **report_with_gold()["calibration"],
        "source": str(path),
    }


@pytest.mark.parametrize(
    ("content", "line", "field", "message"),
    [
        ('{"instruction": "a", "generation": "b", "score": 6}\n', 1, "score", "1..5"),
        ('{"instruction": "a", "score": 3}\n', 1, "generation", "missing"),
        (
            '{"instruction": "a", "generation": "b", "score": 3}\n'
            '{"instruction": "a", "generation": "b", "score": "4"}\n',
            2,
            "score",
            "labelled 3 by an earlier row and 4",
        ),
        ("", None, None, "no rows"),
    ],
)
def test_bad_gold_files_are_located(
    tmp_path: Path, content: str, line: int | None, field: str | None, message: str
) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        load_gold(str(path))
    assert (info.value.line, info.value.field) == (line, field)
    assert run_report(THREE, None, gold=str(path)) == 2


def test_text_report_and_heatmap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import matplotlib.image

    assert run_report(THREE, str(tmp_path), gold=GOLD) == 0
    out = capsys.readouterr().out
    assert "Calibration against" in out and "4 of 5 gold rows matched (1 not in" in out
    assert "--agg median" in out and "Precision / recall" in out
    height, width = matplotlib.image.imread(tmp_path / "gold_heatmap.png").shape[:2]
    assert width >= 800 and height >= 500


def test_select_recommends_k(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kept.jsonl"
    # --agg min on the gold pairs: 4 1 4 4 3 against people 4 1 5 4 3; good (>= 4): 3 pairs.
    # K=1 keeps 5 (precision 3/5), K=2..3 keep 4 (3/4), K=4 keeps 3 (3/3): K=4 reaches 100%.
    code = run_select(
        THREE, min_score=None, agg="min", output=str(out), gold=GOLD, target_precision=1.0
    )
    err = capsys.readouterr().err
    assert code == 0 and "recommended K = 4" in err and "keeping 100.0%" in err
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["aggregate"]["value"] for row in kept] == [4, 4, 4]  # pairs 1, 3, 4
    # --min-score given: the recommendation is printed, the selection uses the given K
    code = run_select(
        THREE, min_score=5, agg="median", output=str(out), gold=GOLD, target_precision=0.7
    )
    err = capsys.readouterr().err
    # median 5 1 4 4.5 3: K=3 keeps 4 (3 good: 0.75 >= 0.7); K=2 keeps 4 too: K=2 is smallest
    assert code == 0 and "recommended K = 2" in err
    assert len(out.read_text().splitlines()) == 1  # median >= 5: pair 1 only


def test_select_says_when_no_k_reaches_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gold = tmp_path / "gold.jsonl"
    # people disagree with every judge: 60 is wrong, 59 is right
    gold.write_text(
        json.dumps({"instruction": "What is 3 times 20?", "generation": "It's 60.", "score": 1})
        + "\n"
        + json.dumps({"instruction": "What is 3 times 20?", "generation": "It's 59.", "score": 5})
        + "\n"
    )
    out = tmp_path / "kept.jsonl"
    code = run_select(
        THREE, min_score=None, agg="mean", output=str(out), gold=str(gold), target_precision=0.9
    )
    assert code == 1 and "no K reaches precision 90%" in capsys.readouterr().err
    assert not out.exists()


def test_target_precision_needs_gold_and_a_share(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_select(THREE, min_score=4, output=None, target_precision=0.9) == 2
    assert "needs --gold" in capsys.readouterr().err
    assert run_select(THREE, min_score=None, output=None, gold=GOLD, target_precision=1.5) == 2
    assert "must be in (0, 1]" in capsys.readouterr().err
    assert run_select(THREE, min_score=None, output=None) == 2
    assert "give --min-score" in capsys.readouterr().err
