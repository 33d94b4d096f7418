"""The commands a user types, run as subprocesses exactly as the README shows them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from producer.simulator import simulated_score
from producer.simulator_process import SimulatorProcess
from tests.conftest import TEST_KEY, Cluster

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parent.parent


def ibt(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=150,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("IBT_", "OPENAI_", "ANTHROPIC_"))
    }
    env.update(extra)
    return env


def processes_with_marker(marker: str) -> list[int]:
    """PIDs whose environment carries ``marker``: the command's children, if any survive."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def write_pairs(path: Path, n: int) -> list[dict[str, str]]:
    pairs = [
        {"instruction": f"CLI question {i}?", "generation": f"CLI answer {i}."} for i in range(n)
    ]
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return pairs


def test_embedded_score_with_real_model_names_against_base_urls(tmp_path: Path) -> None:
    """The done-means check: OPENAI_BASE_URL/ANTHROPIC_BASE_URL pointed at a server speaking
    those protocols; ``ibt score`` starts the embedded stack and returns that server's scores."""
    pairs = write_pairs(tmp_path / "pairs.jsonl", 6)
    marker = f"IBT_TEST_MARKER_{uuid.uuid4().hex}"
    with SimulatorProcess(latency=0.05, api_key=TEST_KEY) as sim:
        env = clean_env(
            OPENAI_API_KEY=TEST_KEY,
            ANTHROPIC_API_KEY=TEST_KEY,
            OPENAI_BASE_URL=sim.openai_base_url,
            ANTHROPIC_BASE_URL=sim.anthropic_base_url,
            **{marker: "1"},
        )
        out = tmp_path / "scored.json"
        done = ibt(
            "score",
            str(tmp_path / "pairs.jsonl"),
            "-m",
            "gpt-4o-mini",
            "-m",
            "claude-3-5-haiku-latest",
            "-o",
            str(out),
            env=env,
        )
        assert done.returncode == 0, done.stderr
        results = json.loads(out.read_text())
        assert sim.stats()["requests"] == 12
    models = ["gpt-4o-mini", "claude-3-5-haiku-latest"]
    assert [(r["instruction"], r["model"]) for r in results] == [
        (p["instruction"], m) for p in pairs for m in models
    ]
    for record in results:
        assert record["score"] == str(
            simulated_score(record["model"], record["instruction"], record["generation"])
        )
    assert "tokens in" in done.stderr and "gpt-4o-mini" in done.stderr
    assert processes_with_marker(marker) == [], "embedded stack left processes behind"


def test_demo_runs_on_simulated_judges_without_keys(tmp_path: Path) -> None:
    marker = f"IBT_TEST_MARKER_{uuid.uuid4().hex}"
    out = tmp_path / "demo.jsonl"
    done = ibt("demo", "-o", str(out), env=clean_env(**{marker: "1"}))
    assert done.returncode == 0, done.stderr
    assert "SIMULATED" in done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 16
    assert records[0]["instruction"] == "What is 3 times 20?"
    assert {r["model"] for r in records} == {"simulated-openai", "simulated-anthropic"}
    assert all(r["score"] in {"1", "2", "3", "4", "5"} for r in records)
    assert processes_with_marker(marker) == []


def test_missing_key_is_an_error_before_anything_starts(tmp_path: Path) -> None:
    write_pairs(tmp_path / "p.jsonl", 2)
    done = ibt("score", str(tmp_path / "p.jsonl"), "-m", "gpt-4o-mini", env=clean_env())
    assert done.returncode == 2
    assert "OPENAI_API_KEY is not set" in done.stderr


def test_bad_input_names_file_line_field_and_enqueues_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"instruction": "a", "generation": "b"}\n{"instruction": "c", "generation": 7}\n'
    )
    client = redis.Redis.from_url(cluster.url)
    before = set(client.keys("*"))
    done = ibt("score", str(bad), "-m", "gpt-test", env=clean_env(IBT_BROKER_URL=cluster.url))
    assert done.returncode == 2
    assert "bad.jsonl:2" in done.stderr and "generation" in done.stderr
    assert set(client.keys("*")) == before, "something was written to the broker"


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    write_pairs(tmp_path / "p.jsonl", 1)
    done = ibt("score", str(tmp_path / "p.jsonl"), "-m", "mystery-model", env=clean_env())
    assert done.returncode == 2
    assert "unknown model 'mystery-model'" in done.stderr


def test_no_wait_then_status_and_result(cluster: Cluster, tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.csv.jsonl", 4)
    env = clean_env(IBT_BROKER_URL=cluster.url)
    submitted = ibt(
        "score", str(tmp_path / "pairs.csv.jsonl"), "-m", "gpt-test", "--no-wait", env=env
    )
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().splitlines()[-1]
    from producer import job as jobs

    jobs.wait(cluster.app, job, poll_interval=0.1)
    status = ibt("status", job, env=env)
    assert status.returncode == 0 and "done" in status.stderr and "gpt-test" in status.stderr
    assert "queue" in status.stderr and "4/4" in status.stderr
    fetched = ibt("result", job, "-o", str(tmp_path / "r.jsonl"), env=env)
    assert fetched.returncode == 0, fetched.stderr
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in rows] == [p["instruction"] for p in pairs]


def test_plain_celery_cli_works_on_our_app(cluster: Cluster) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "inspect", "ping", "--timeout", "3"],
        env=clean_env(IBT_BROKER_URL=cluster.url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "pong" in done.stdout


def test_help_and_parsing_import_nothing_heavy() -> None:
    """``ibt --help`` and argument errors answer at once: building and running the parser
    imports none of Celery, Redis, rich, aiohttp or the SDKs (a command imports what it
    needs when it runs). Measured: 0.9 s before, 0.06-0.09 s after, on this machine."""
    heavy = ("celery", "kombu", "redis", "rich", "aiohttp", "openai", "anthropic", "tiktoken")
    code = (
        "import sys\n"
        "from producer.cli import build_parser\n"
        "parser = build_parser()\n"
        "parser.parse_known_args(['score', 'x.jsonl', '-m', 'gpt-4o-mini'])\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    shown = ibt("--help", env=clean_env())
    assert shown.returncode == 0 and "score" in shown.stdout
