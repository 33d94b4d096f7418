"""producer.curation.report: loading results files, the hand-computed report, printing and plots.

The fixture ``tests/data/report/three_judges.json`` (and the same records as ``.jsonl``) has
6 pairs x 3 judges, A = gpt-4o-mini, B = claude-3-5-haiku-latest, C = openai/llama3.1:8b:

    pair                         A      B                 C
    1 3x20 / "It's 60."          5      5                 4
    2 3x20 / "It's 59."          1      2                 1
    3 prime / "7"                4      rate_limit        4
    4 3x20 / "It's 60." (again)  5      4                 unparseable reply
    5 capital / ""               input  input             input
    6 haiku                      3      3                 3

A and B carry tokens on their scored records (A 120 in / 30 out, B 150 / 40); C has none.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from rich.console import Console
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from producer.cli import main
from producer.curation.plots import LENGTH_PNG
from producer.curation.report import (
    HEATMAP_PNG,
    HISTOGRAM_PNG,
    REDIRECTED_WIDTH,
    build_report,
    format_cost,
    load_prices,
    print_report,
    run_report,
    write_plots,
)
from producer.curation.results import load_results
from workers.errors import ConfigError, InputError

DATA = Path(__file__).parent / "data" / "report"
THREE = str(DATA / "three_judges.json")
PRICES = str(DATA / "prices.toml")
A, B, C = "gpt-4o-mini", "claude-3-5-haiku-latest", "openai/llama3.1:8b"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def render(report: object, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    print_report(report, console)  # type: ignore[arg-type]
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_per_judge_stats_by_hand() -> None:
    report = build_report(THREE)
    assert (report.records, report.pairs, report.models) == (18, 6, [A, B, C])
    a, b, c = report.per_model
    # A scored 5 1 4 5 3: mean 18/5, median 4; error: the empty generation
    assert (a.count, a.scored, a.histogram) == (6, 5, (1, 0, 1, 1, 2))
    assert a.mean == pytest.approx(3.6) and a.median == 4.0
    assert a.errors == {"input": 1}
    # B scored 5 2 4 3: mean 3.5, median (3 + 4) / 2
    assert (b.scored, b.histogram, b.mean, b.median) == (4, (0, 1, 1, 1, 1), 3.5, 3.5)
    assert b.errors == {"input": 1, "rate_limit": 1}
    assert b.error_share == {"input": 1 / 6, "rate_limit": 1 / 6}
    # C scored 4 1 4 3: mean 3, median 3.5
    assert (c.scored, c.histogram, c.mean, c.median) == (4, (1, 0, 1, 2, 0), 3.0, 3.5)
    assert c.errors == {"input": 1, "unparseable reply": 1}
    assert report.error_records == 5
    # tokens: A 5 x (120, 30), B 4 x (150, 40), C absent -> 0
    assert [(s.input_tokens, s.output_tokens) for s in report.per_model] == [
        (600, 150),
        (600, 160),
        (0, 0),
    ]
    assert all(s.cost is None for s in report.per_model) and report.total_cost is None


def test_agreement_by_hand() -> None:
    report = build_report(THREE)
    ab = report.agreement(A, B)
    ac = report.agreement(A, C)
    bc = report.agreement(B, C)
    assert ab is not None and ac is not None and bc is not None
    # A-B on pairs 1 2 4 6: a = 5 1 5 3, b = 5 2 4 3 (see test_stats for the arithmetic)
    assert (ab.n, ab.exact) == (4, 0.5)
    assert ab.kappa_quadratic == pytest.approx(0.875)
    assert ab.kappa_linear == pytest.approx(9 / 13)
    assert ab.spearman == pytest.approx(math.sqrt(0.9))
    # A-C on pairs 1 2 3 6: a = 5 1 4 3, c = 4 1 4 3; exact 3/4
    #   quadratic: observed (1+0+0+0)/4 = 1/4; expected over all (a_i, c_j):
    #   a=5: 1+16+1+4 = 22, a=1: 9+0+9+4 = 22, a=4: 0+9+0+1 = 10, a=3: 1+4+1+0 = 6 -> 60/16
    #   kappa = 1 - (1/4) / (60/16) = 1 - 1/15 = 14/15
    #   linear: observed 1/4; expected (8 + 8 + 4 + 4) / 16 = 3/2; kappa = 1 - 1/6 = 5/6
    assert (ac.n, ac.exact) == (4, 0.75)
    assert ac.kappa_quadratic == pytest.approx(14 / 15)
    assert ac.kappa_linear == pytest.approx(5 / 6)
    assert ac.spearman == pytest.approx(math.sqrt(0.9))
    # B-C on pairs 1 2 6: b = 5 2 3, c = 4 1 3; exact 1/3; same order -> rho = 1
    #   quadratic: observed 2/3; expected (21 + 6 + 5) / 9 = 32/9; kappa = 1 - 18/96 = 13/16
    #   linear: observed 2/3; expected (7 + 4 + 3) / 9 = 14/9; kappa = 1 - 6/14 = 4/7
    assert (bc.n, bc.exact) == (3, pytest.approx(1 / 3))
    assert bc.kappa_quadratic == pytest.approx(13 / 16)
    assert bc.kappa_linear == pytest.approx(4 / 7)
    assert bc.spearman == pytest.approx(1.0)
    # all three scored pairs 1, 2 and 6; they agree only on 6
    c = report.consensus
    assert (c.models, c.pairs, c.all_scored, c.all_agree) == (3, 6, 3, 1)


def test_json_and_jsonl_give_the_same_report() -> None:
    from_json = build_report(THREE)
    from_lines = build_report(str(DATA / "three_judges.jsonl"))
    assert from_json.per_model == from_lines.per_model
    assert from_json.agreements == from_lines.agreements
    assert from_json.consensus == from_lines.consensus


def test_prices_from_a_models_file() -> None:
    prices = load_prices(str(DATA / "prices.toml"))
    # the llama table has no price keys: no price; provider/concurrency keys are ignored
    assert prices == {A: (0.15, 0.6), B: (0.8, 4.0)}
    report = build_report(THREE, prices)
    a, b, c = report.per_model
    # A: 600 * 0.15 / 1e6 + 150 * 0.6 / 1e6 = 0.00018; B: 600 * 0.8 / 1e6 + 160 * 4 / 1e6
    assert a.cost == pytest.approx(0.00018)
    assert b.cost == pytest.approx(0.00112)
    assert c.cost is None
    assert report.total_cost == pytest.approx(0.0013)
    text = render(report)
    assert "$0.00018" in text and "no price for openai/llama3.1:8b" in text


@pytest.mark.parametrize(
    ("body", "message", "line"),
    [
        ('[models."m"]\ninput_price_per_mtok = 1\n', "missing", 1),
        ("[models.m]\nx = 1\n\n[models.n]\noutput_price_per_mtok = true\n", "missing", 4),
        ('[models."m"]\ninput_price_per_mtok = "1"\noutput_price_per_mtok = 2\n', "number", 2),
        ('[models."m"]\ninput_price_per_mtok = 1\noutput_price_per_mtok = -2\n', "zero", 3),
        ("[models\n", "invalid TOML", None),
        ("x = 1\n", "models", None),
    ],
)
def test_bad_prices_are_located(tmp_path: Path, body: str, message: str, line: int | None) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message) as info:
        load_prices(str(path))
    assert info.value.source == str(path)
    assert info.value.line == line


def test_printed_report() -> None:
    text = render(build_report(THREE))
    for expected in (
        "18 records, 6 pairs, 3 judges, 5 error records",
        "rate_limit",
        "unparseable reply",
        "0.875",  # A-B quadratic kappa
        "0.692",  # A-B linear kappa, 9/13
        "0.949",  # Spearman, sqrt(0.9)
        "All 3 judges scored 3 of 6 pairs; they agree exactly on 1 (33.3%).",
    ):
        assert expected in text, expected


def test_narrow_console_splits_tables() -> None:
    report = build_report(THREE, load_prices(str(DATA / "prices.toml")))
    wide = render(report, width=200)
    narrow = render(report, width=80)
    assert "Scores given" not in wide
    assert "Scores given" in narrow and "Tokens and cost" in narrow
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert "claude-3-5-haiku-latest" in narrow  # names kept whole when they fit


def test_one_judge_has_no_agreement_section(tmp_path: Path) -> None:
    report = build_report(str(DATA / "one_judge.jsonl"))
    assert report.models == [A] and report.agreements == []
    text = render(report)
    assert "Agreement" not in text and "1 judge," in text
    assert write_plots(report, tmp_path) == [tmp_path / HISTOGRAM_PNG, tmp_path / LENGTH_PNG]
    assert (tmp_path / HISTOGRAM_PNG).read_bytes().startswith(PNG_MAGIC)


def test_plots_are_valid_pngs(tmp_path: Path) -> None:
    import matplotlib.image

    out = tmp_path / "plots"
    paths = write_plots(build_report(THREE), out)
    assert paths == [out / HISTOGRAM_PNG, out / HEATMAP_PNG, out / LENGTH_PNG]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
        height, width = matplotlib.image.imread(path).shape[:2]
        assert width >= 500 and height >= 400  # readable at 100 dpi


def test_run_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The report is the output (stdout); notes about written files are not (stderr).
    code = run_report(THREE, str(tmp_path), PRICES)
    captured = capsys.readouterr()
    assert code == 0
    assert "Agreement between judges" in captured.out and "$0.00018" in captured.out
    assert "\x1b" not in captured.out  # not a terminal: no colour codes
    assert "Agreement" not in captured.err and "wrote" not in captured.out
    assert f"wrote {tmp_path / HEATMAP_PNG}" in captured.err.replace("\n", "")
    assert (tmp_path / HISTOGRAM_PNG).stat().st_size > 0


def test_ibt_report_prints_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", THREE, "--prices", PRICES]) == 0
    captured = capsys.readouterr()
    assert "18 records, 6 pairs, 3 judges, 5 error records" in captured.out
    assert "All 3 judges scored 3 of 6 pairs" in captured.out
    assert captured.err == ""


def test_redirected_report_is_plain_text_at_a_fixed_width(tmp_path: Path) -> None:
    # What a user does: `ibt report results.json > report.txt`, from a colour terminal.
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    env.update(TERM="xterm-256color", COLUMNS="60")
    report = tmp_path / "report.txt"
    with report.open("wb") as stdout:
        done = subprocess.run(
            [sys.executable, "-m", "producer.cli", "report", THREE],
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    text = report.read_text(encoding="utf-8")
    assert "Agreement between judges" in text and "0.875" in text
    assert "\x1b" not in text
    widths = [len(line) for line in text.splitlines()]
    # the agreement table is about 100 columns: not wrapped to $COLUMNS, nor wider than fixed
    assert 60 < max(widths) <= REDIRECTED_WIDTH
    assert done.stderr == b""


def tables(text: str) -> dict[str, list[list[str]]]:
    """The body rows of each table in a plain-text report (stripped cells), by table title."""
    found: dict[str, list[list[str]]] = {}
    title = ""
    for line in text.splitlines():
        if "│" in line:
            found.setdefault(title, []).append([cell.strip() for cell in line.split("│")[1:-1]])
        elif line[:1] not in "┏┃┡└":
            title = line.split(" (")[0]
    return found


def test_json_report_has_the_text_report_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_report(THREE, None, PRICES, as_json=True) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert captured.err == ""
    assert run_report(THREE, None, PRICES) == 0
    text = capsys.readouterr().out
    shown = tables(text)

    def num(value: float | None, digits: int) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    def pct(value: float) -> str:
        return f"{value:.1%}"

    assert list(data) == [
        "source",
        "records",
        "pairs",
        "judges",
        "error_records",
        "models",
        "total_cost",
        "usage_source",
        "agreement",
        "consensus",
        "krippendorff_alpha",
        "incomplete_pairs",
        "length_bias",
        "calibration",
        "self_consistency",
    ]
    header = (
        f"{data['source']}: {data['records']} records, {data['pairs']} pairs, "
        f"{data['judges']} judges, {data['error_records']} error records"
    )
    assert text.splitlines()[0] == header
    errors = iter(shown["Error records by kind"])
    for judge in data["models"]:
        cells = [
            cell
            for title in ("Judges", "Scores given", "Tokens and cost")  # split when too wide
            for row in shown.get(title, [])
            if row[0] == judge["model"]
            for cell in row[1:]
        ]
        assert cells == [
            str(judge["records"]),
            str(judge["scored"]),
            str(judge["error_records"]),
            num(judge["mean"], 2),
            num(judge["median"], 1),
            *(str(judge["histogram"][str(score)]) for score in range(1, 6)),
            str(judge["input_tokens"]),
            str(judge["output_tokens"]),
            format_cost(judge["cost"]),
        ]
        assert judge["simulated"] is False
        for i, (kind, entry) in enumerate(judge["errors"].items()):
            name = judge["model"] if i == 0 else ""
            assert next(errors) == [name, kind, str(entry["records"]), pct(entry["share"])]
    assert next(errors, None) is None
    agreement = [
        [
            entry["model_a"],
            entry["model_b"],
            str(entry["pairs"]),
            pct(entry["exact"]),
            num(entry["kappa_quadratic"], 3),
            num(entry["kappa_linear"], 3),
            num(entry["spearman"], 3),
        ]
        for entry in data["agreement"]
    ]
    assert agreement == shown["Agreement between judges"]
    assert f"total cost: {format_cost(data['total_cost'])}" in text
    assert len(agreement) == 3
    c = data["consensus"]
    assert (
        f"All {c['judges']} judges scored {c['all_scored']} of {c['pairs']} pairs; "
        f"they agree exactly on {c['all_agree']} ({pct(c['agree_share'])})."
    ) in text
    # and the numbers are the computed ones, unrounded
    report = build_report(THREE, load_prices(PRICES))
    assert data["models"][1]["mean"] == report.per_model[1].mean == 3.5
    assert data["agreement"][0]["kappa_quadratic"] == report.agreements[0].kappa_quadratic
    assert data["total_cost"] == report.total_cost


def test_json_report_with_one_judge_and_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_report(str(DATA / "one_judge.jsonl"), None, as_json=True) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["judges"] == 1 and data["agreement"] == []
    assert data["models"][0]["cost"] is None and data["total_cost"] is None
    bad = str(DATA / "bad_score.jsonl")
    assert run_report(bad, None, as_json=True) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"{bad}:2" in captured.err.replace("\n", "")


@pytest.mark.parametrize(
    ("name", "line", "field", "message"),
    [
        ("bad_json.jsonl", 3, None, "invalid JSON"),
        ("missing_model.json", 9, "model", "missing"),
        ("bad_score.jsonl", 2, "score", '"1".."5"'),
    ],
)
def test_bad_files_name_file_line_and_field(
    name: str, line: int, field: str | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(DATA / name)
    with pytest.raises(InputError, match=message) as info:
        load_results(path)
    assert (info.value.source, info.value.line, info.value.field) == (path, line, field)
    assert run_report(path, None) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert f"{path}:{line}" in err


GOOD = json.dumps(
    {"reasoning": "r", "score": "4", "instruction": "i", "generation": "g", "model": "m"}
).encode()


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"", None, "no records"),
        (b"[]", None, "no records"),
        # streamed: a bad record is reported as soon as it is read, so these are valid ones
        (b"[\n  " + GOOD + b"\n  " + GOOD + b"\n]", 3, "expected ',' or ']'"),
        (b"[\n  1\n]", 2, "expected a JSON object, got number"),
        (b'[\n {"a": 1', 2, "invalid JSON"),
        (b"[" + GOOD, 1, "unterminated"),
        (b"[]\n[]", 2, "extra data"),
        (b"\n\n\xff\n", 3, "not UTF-8"),
        (b'{"score": "5"}\n', 1, "missing"),
    ],
)
def test_malformed_files(tmp_path: Path, content: bytes, line: int | None, message: str) -> None:
    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        load_results(str(path))
    assert info.value.line == line


def test_line_numbers_and_separators(tmp_path: Path) -> None:
    record = {"reasoning": "r", "score": "4", "instruction": "a\u2028b", "generation": "g"}
    path = tmp_path / "r.jsonl"
    # CRLF line ends, a blank line, U+2028 inside a string (not a line break in JSON Lines)
    lines = [json.dumps({**record, "model": "m"}, ensure_ascii=False), ""]
    lines.append(json.dumps({**record, "model": "n", "score": "9"}))
    path.write_bytes("\r\n".join(lines).encode())
    with pytest.raises(InputError, match="score") as info:
        load_results(str(path))
    assert info.value.line == 3
    path.write_bytes("\r\n".join(lines[:1]).encode())
    assert load_results(str(path))[0].instruction == "a\u2028b"
    # an array after blank lines: lines counted from the top of the file
    array = tmp_path / "r.json"
    array.write_text("\n\n[\n" + json.dumps(record) + "\n]\n")
    with pytest.raises(InputError, match="model") as info:
        load_results(str(array))
    assert info.value.line == 4
    # a JSON Lines file whose later line is an array is still JSON Lines
    path.write_text(json.dumps({**record, "model": "m"}) + "\n[1]\n")
    with pytest.raises(InputError, match="got array") as info:
        load_results(str(path))
    assert info.value.line == 2


def test_missing_file() -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_results("/nonexistent/results.json")


def test_bom_and_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    body = (DATA / "three_judges.jsonl").read_bytes()

    class Stdin:
        buffer = io.BytesIO(b"\xef\xbb\xbf" + body)

    monkeypatch.setattr("sys.stdin", Stdin)
    records = load_results("-")
    assert len(records) == 18 and records[0].line == 1


def test_random_results_match_scipy_and_sklearn(tmp_path: Path) -> None:
    rng = random.Random(5)
    models = ["m1", "m2", "m3"]
    rows = []
    for i in range(300):
        truth = rng.randint(1, 5)
        for model in models:
            record: dict[str, str | None] = {
                "reasoning": "r",
                "instruction": f"q{i % 250}",
                "generation": "g",
            }
            if rng.random() < 0.1:
                record.update(score=None, reasoning=None, error="server: HTTP 503")
            else:
                noisy = min(5, max(1, truth + rng.choice([-1, 0, 0, 1])))
                record["score"] = str(noisy)
            rows.append({**record, "model": model})
    rows_scores = [(i // 3, row["model"], row["score"]) for i, row in enumerate(rows)]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = build_report(str(path))
    assert report.pairs == 300  # 50 instructions appear twice: each occurrence is its own pair
    by_pair: dict[tuple[int, str | None], int] = {}
    for pair, name, score in rows_scores:
        if score is not None:
            by_pair[(pair, name)] = int(score)
    for entry in report.agreements:
        keys = [
            i for i in range(300) if (i, entry.model_a) in by_pair and (i, entry.model_b) in by_pair
        ]
        a = [by_pair[(i, entry.model_a)] for i in keys]
        b = [by_pair[(i, entry.model_b)] for i in keys]
        assert entry.n == len(keys)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = [1, 2, 3, 4, 5]
            quad = cohen_kappa_score(a, b, labels=labels, weights="quadratic")
            lin = cohen_kappa_score(a, b, labels=labels, weights="linear")
            rho = spearmanr(a, b).statistic
        assert entry.kappa_quadratic == pytest.approx(quad, abs=1e-9)
        assert entry.kappa_linear == pytest.approx(lin, abs=1e-9)
        assert entry.spearman == pytest.approx(rho, abs=1e-9)
