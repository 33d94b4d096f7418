"""Large jobs on real parts: the window bounds the queues, output streams while the job runs
and leaves Redis, a killed feeder or writer resumes with no gap and no repeat, --no-wait
jobs feed themselves, Parquet in and out, and --map."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from producer import job as jobs
from producer.feeding import JobInput
from producer.inputs import Pair
from producer.local import ValkeyProcess
from producer.processes import child_env
from producer.simulator import simulated_score
from producer.simulator_process import SimulatorProcess
from tests.conftest import ANTHROPIC_MODEL, OPENAI_MODEL, TEST_KEY, Cluster
from tests.test_edges_cluster import poll
from workers import jobstate
from workers.feeding import Options
from workers.models import ModelRegistry, queue_name

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
MODELS = [OPENAI_MODEL, ANTHROPIC_MODEL]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Cluster]:
    """Own broker and a simulator with a little latency, so a job lasts long enough to watch."""
    valkey = ValkeyProcess(tmp_path / "valkey")
    valkey.start()
    sim = SimulatorProcess(latency=0.02, api_key=TEST_KEY)
    sim.start()
    cluster = Cluster(valkey, sim, tmp_path)
    cluster.start_worker([OPENAI_MODEL], concurrency=4)
    cluster.start_worker([ANTHROPIC_MODEL], concurrency=4)
    cluster.wait_ready()
    yield cluster
    cluster.stop()
    sim.stop()
    valkey.stop()


def rows(n: int, tag: str, *, repeat_every: int = 0) -> list[dict[str, Any]]:
    """n input rows with an id each; every ``repeat_every``-th row repeats row 0's pair."""
    out = []
    for i in range(n):
        j = 0 if repeat_every and i and i % repeat_every == 0 else i
        out.append({"instruction": f"{tag} q{j}", "generation": f"{tag} a{j}", "id": i})
    return out


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def expected(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (r["id"], r["instruction"], m, str(simulated_score(m, r["instruction"], r["generation"])))
        for r in records
        for m in MODELS
    ]


def seen(output: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["id"], r["instruction"], r["model"], r["score"]) for r in output]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ibt(cluster: Cluster, *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "producer.cli", *argv],
        env=child_env(**cluster.env(IBT_HOME=str(cluster.log_dir / "home"))),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_the_window_bounds_the_queues_while_the_job_runs(stack: Cluster) -> None:
    """W = 50 and 2,000 tasks: the queues never hold more than W plus the workers' prefetch,
    and no model ever has more than W tasks sent and unfinished."""
    cluster, window = stack, 50
    pairs = [Pair(f"w q{i}", f"w a{i}") for i in range(1000)]
    specs = ModelRegistry().resolve_all(MODELS)
    feeder = jobs.start(cluster.app, pairs, specs, options=Options(), window=window)
    longest: dict[str, int] = dict.fromkeys(MODELS, 0)
    in_flight = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal in_flight
        sampler = redis.Redis.from_url(cluster.url)
        while not stop.is_set():
            with sampler.pipeline() as pipe:  # one snapshot: queues, fed and done together
                for model in MODELS:
                    pipe.llen(queue_name(model))
                pipe.hget(jobstate.meta_key(feeder.job), "fed")
                pipe.hgetall(jobstate.stats_key(feeder.job))
                *lengths, fed, stats = pipe.execute()
            for model, length in zip(MODELS, lengths, strict=True):
                longest[model] = max(longest[model], int(length))
                done = int(stats.get(f"{model}:done".encode(), 0))
                in_flight = max(in_flight, int(fed or 0) - done)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = jobs.wait(cluster.app, feeder.job, feeder=feeder, poll_interval=0.1)
    finally:
        stop.set()
        watcher.join()
    assert len(result.results) == 2000
    assert [r["instruction"] for r in result.results[::2]] == [p.instruction for p in pairs]
    prefetch = 4  # each model's worker: 4 threads x prefetch multiplier 1
    print(f"\nwindow {window}: longest queues {longest}, most in flight per model {in_flight}")
    assert max(longest.values()) <= window + prefetch
    assert in_flight <= window
    assert min(longest.values()) > 0  # the queues were watched while they held work


def test_output_streams_while_running_and_leaves_redis(stack: Cluster, tmp_path: Path) -> None:
    """Rows reach -o in input order while the job runs; written records leave Redis; a
    repeated pair's verdict stays until its last row is written."""
    cluster = stack
    records = rows(400, "stream", repeat_every=50)
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    run = ibt(cluster, "score", str(source), "-o", str(out), "-q", "--window", "40",
              *sum((["-m", m] for m in MODELS), []))  # fmt: skip
    partial = poll(
        lambda: out.exists() and 0 < len(out.read_text().splitlines()) < 800,
        timeout=60,
        what="rows written before the job ends",
    )
    assert partial
    assert run.wait(timeout=120) == 0, run.stderr.read() if run.stderr else ""  # type: ignore[union-attr]
    assert seen(read_jsonl(out)) == expected(records)
    client = jobstate.client_for_url(cluster.url)
    job = next(k for k in client.scan_iter("ibt:job:*") if k.count(":") == 2).split(":")[2]
    for model in MODELS:
        assert client.hlen(jobstate.records_key(job, model)) == 0
    assert client.hlen(jobstate.extra_key(job)) == 0


def test_a_killed_producer_resumes_feeding_and_writing_with_no_gap(
    stack: Cluster, tmp_path: Path
) -> None:
    cluster = stack
    records = rows(600, "kill", repeat_every=7)
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.json"
    models = sum((["-m", m] for m in MODELS), [])
    first = ibt(cluster, "score", str(source), "-o", str(out), "-q", "--window", "30", *models)
    client = jobstate.client_for_url(cluster.url)

    def job_half_written() -> str | None:
        for key in client.scan_iter("ibt:job:*"):
            if key.count(":") == 2 and int(client.hget(key, "written") or 0) >= 100:
                return str(key).split(":")[2]
        return None

    job = poll(job_half_written, timeout=90, what="the producer wrote 100 rows")
    first.send_signal(signal.SIGKILL)
    first.wait()
    calls_before = cluster.simulator.stats()["requests"]
    meta = jobstate.read_meta(client, job) or {}
    assert int(meta["cursor"]) < len(records)  # killed mid-feed
    resumed = ibt(cluster, "score", str(source), "-o", str(out), "-q", "--resume", job, *models)
    assert resumed.wait(timeout=150) == 0, resumed.stderr.read()  # type: ignore[union-attr]
    output = json.loads(out.read_text())  # a whole JSON array, closed once
    assert seen(output) == expected(records)
    unique = len({(r["instruction"], r["generation"]) for r in records})
    calls = cluster.simulator.stats()["requests"]
    assert calls_before <= calls <= unique * len(MODELS) + 8  # at most the in-flight again
    assert jobstate.read_meta(client, job)["status"] == "done"  # type: ignore[index]


def test_no_wait_job_feeds_itself_and_follow_resumes_after_a_crash(
    stack: Cluster, tmp_path: Path
) -> None:
    cluster = stack
    records = rows(500, "follow")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    models = sum((["-m", m] for m in MODELS), [])
    submit = ibt(cluster, "score", str(source), "--no-wait", "--window", "25", *models)
    stdout, stderr = submit.communicate(timeout=60)
    assert submit.returncode == 0, stderr
    job = stdout.decode().split()[-1]
    client = jobstate.client_for_url(cluster.url)
    # The cluster feeds the job (ibt.feed), perhaps after `ibt score --no-wait` has exited.
    fed = poll(lambda: (jobstate.read_meta(client, job) or {}).get("fed"), timeout=30, what="fed")
    assert int(fed) <= 25
    out = tmp_path / "follow.jsonl"
    follower = ibt(cluster, "result", job, "--follow", "-o", str(out))
    poll(
        lambda: out.exists() and len(out.read_text().splitlines()) >= 100,
        timeout=90,
        what="100 rows",
    )
    follower.send_signal(signal.SIGKILL)
    follower.wait()
    again = ibt(cluster, "result", job, "--follow", "-o", str(out))
    assert again.wait(timeout=150) == 0, again.stderr.read()  # type: ignore[union-attr]
    assert seen(read_jsonl(out)) == expected(records)
    assert not list(client.scan_iter(f"ibt:job:{job}:input:*"))  # the input left Redis as fed


def test_parquet_in_and_out_with_an_alpaca_column_map(stack: Cluster, tmp_path: Path) -> None:
    cluster = stack
    alpaca = [
        {"instruction": f"Translate {i}", "input": "" if i % 2 else f"word {i}",
         "output": f"mot {i}", "id": i}
        for i in range(30)
    ]  # fmt: skip
    source = tmp_path / "alpaca.parquet"
    pq.write_table(pa.Table.from_pylist(alpaca), source)
    out = tmp_path / "scored.parquet"
    argv = ["score", str(source), "-o", str(out), "-q", "--map", "instruction=instruction,input",
            "--map", "generation=output", *sum((["-m", m] for m in MODELS), [])]  # fmt: skip
    run = ibt(cluster, *argv)
    assert run.wait(timeout=120) == 0, run.stderr.read()  # type: ignore[union-attr]
    table = pq.read_table(out)
    assert table.schema.field("score").type == pa.string()
    assert table.schema.field("id").type == pa.int64()
    got = table.to_pylist()
    wanted = []
    for row in alpaca:
        instruction = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        for model in MODELS:
            score = str(simulated_score(model, instruction, row["output"]))
            wanted.append((row["id"], instruction, row["output"], model, score))
    assert [(r["id"], r["instruction"], r["generation"], r["model"], r["score"]) for r in got] == (
        wanted
    )
    assert "input" not in table.column_names and "output" not in table.column_names
    import pandas as pd

    assert pd.read_parquet(out)["score"].tolist() == [w[4] for w in wanted]
    from datasets import load_dataset

    dataset = load_dataset("parquet", data_files=str(out), split="train")
    assert dataset.num_rows == 60 and dataset[0]["model"] == OPENAI_MODEL


def test_a_missing_mapped_column_is_refused_before_anything_runs(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "q", "output": "a"}]), source)
    run = subprocess.run(
        [sys.executable, "-m", "producer.cli", "score", str(source), "-m", "simulated-openai",
         "--map", "instruction=question", "--map", "generation=output"],
        env=child_env(IBT_HOME=str(tmp_path / "home")),
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "no column 'question' for instruction" in run.stderr and str(source) in run.stderr
    assert "field 'question'" in run.stderr
    assert not (tmp_path / "home" / "valkey").exists()  # nothing started


def test_scan_keeps_a_digest_per_row_and_finds_repeats(tmp_path: Path) -> None:
    from producer.inputs import InputSource, scan

    records = rows(5000, "scan", repeat_every=10)
    source = InputSource.open(str(write_jsonl(tmp_path / "in.jsonl", records)))
    found = scan(source)
    texts = [(r["instruction"], r["generation"]) for r in records]
    first = {t: i for i, t in reversed(list(enumerate(texts)))}
    assert found.rows == 5000 and found.unique == len(first)
    assert found.duplicates == {i: first[t] for i, t in enumerate(texts) if first[t] != i}
    data = JobInput.from_source(source)
    fed = list(data.feed_rows(4990))
    assert [row for row, _, _ in fed] == list(range(4990, 5000))
    assert fed[0][1] is None and fed[1][1] == ("scan q4991", "scan a4991")  # 4990 repeats 0


def test_curation_reads_and_writes_parquet(tmp_path: Path) -> None:
    """report, select and reparse read a Parquet results file as they read JSON Lines, and
    select writes Parquet."""
    from producer.formats import write_parquet

    results = ROOT / "producer" / "examples" / "gold_sample_results.jsonl"
    as_parquet = tmp_path / "results.parquet"
    write_parquet(iter(read_jsonl(results)), as_parquet)

    def ibt_json(*argv: str) -> Any:
        run = subprocess.run(
            [sys.executable, "-m", "producer.cli", *argv],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env=child_env(IBT_HOME=str(tmp_path / "home")),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        return run.stdout

    from_jsonl = json.loads(ibt_json("report", str(results), "--json"))
    from_parquet = json.loads(ibt_json("report", str(as_parquet), "--json"))
    assert from_parquet["source"] == str(as_parquet)
    assert {**from_parquet, "source": None} == {**from_jsonl, "source": None}
    keep = tmp_path / "keep.parquet"
    ibt_json("select", str(as_parquet), "--min-score", "4", "-o", str(keep))
    ibt_json("select", str(results), "--min-score", "4", "-o", str(tmp_path / "keep.jsonl"))
    kept = pq.read_table(keep).to_pylist()
    assert [r["instruction"] for r in kept] == [
        r["instruction"] for r in read_jsonl(tmp_path / "keep.jsonl")
    ]
    assert kept and all(r["aggregate"]["value"] >= 4 for r in kept)


def test_parquet_parts_that_disagree_on_a_type_keep_it_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from producer import formats

    monkeypatch.setattr(formats, "PARQUET_BATCH", 2)
    records = [
        {"reasoning": "r", "score": "4", "instruction": "q", "generation": "a", "model": "m",
         "id": value}
        for value in (1, 2, "three", None, {"k": 5})
    ]  # fmt: skip
    out = tmp_path / "mixed.parquet"
    assert formats.write_parquet(iter(records), out) == 5
    table = pq.read_table(out)
    assert table.schema.field("id").type == pa.string()
    assert table.column("id").to_pylist() == ["1", "2", "three", None, '{"k": 5}']
    assert table.column("score").to_pylist() == ["4"] * 5


def test_a_feeder_that_lost_its_lease_publishes_nothing(tmp_path: Path) -> None:
    """A producer stalled past its lease (another feeder took over) must not send what the
    new feeder sends: its transaction is conditional on the lease."""
    from workers.app import create_app
    from workers.feeding import feeder_key
    from workers.leases import LeaseLost

    valkey = ValkeyProcess(tmp_path / "valkey")
    valkey.start()
    app = create_app(valkey.url)
    try:
        client = jobstate.client_for_url(valkey.url)
        pairs = [Pair(f"l q{i}", f"l a{i}") for i in range(100)]
        specs = ModelRegistry().resolve_all(MODELS)
        feeder = jobs.start(app, pairs, specs, options=Options(), window=10)
        queued = client.llen(queue_name(OPENAI_MODEL))
        assert queued == 10 and int(jobstate.read_meta(client, feeder.job)["cursor"]) == 10  # type: ignore[index]
        client.set(feeder_key(feeder.job), "another feeder")  # its lease lapsed; taken over
        client.delete(queue_name(OPENAI_MODEL), queue_name(ANTHROPIC_MODEL))  # all "done"
        for model in MODELS:
            client.hset(jobstate.stats_key(feeder.job), f"{model}:done", 10)
        with pytest.raises(LeaseLost):
            feeder.top_up(jobstate.progress(client, feeder.job))
        with pytest.raises(LeaseLost):  # even past the check at the top, the EXEC is refused
            feeder._publish_chunk(10)
        assert client.llen(queue_name(OPENAI_MODEL)) == 0
        assert int(jobstate.read_meta(client, feeder.job)["cursor"]) == 10  # type: ignore[index]
    finally:
        feeder.lease._stop.set()
        app.pool.force_close_all()
        valkey.stop()
