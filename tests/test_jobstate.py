"""A job's records in Redis: kept once, closed by the callback, streamed in input order."""

from __future__ import annotations

import json

import pytest
import redis

from producer.local import ValkeyProcess
from workers import jobstate, tasks

MODELS = ["gpt-a", "claude-b"]


def report(client: redis.Redis, job: str, index: int, model: str, reasoning: str) -> int:
    record = {
        "reasoning": reasoning,
        "score": "4",
        "instruction": f"q{index}",
        "generation": f"a{index}",
        "model": model,
    }
    return jobstate.record_outcome(
        client,
        job,
        model,
        index,
        error=False,
        input_tokens=10,
        output_tokens=5,
        cached=False,
        expires=600,
        record=json.dumps(record),
    )


def test_a_record_is_kept_and_counted_once_tokens_always(valkey: ValkeyProcess) -> None:
    client = jobstate.client_for_url(valkey.url)
    assert report(client, "once", 0, "gpt-a", "first") & 1
    assert not report(client, "once", 0, "gpt-a", "redelivered") & 1
    stored = json.loads(str(client.hget(jobstate.records_key("once", "gpt-a"), "0")))
    assert stored["reasoning"] == "first"
    stats = client.hgetall(jobstate.stats_key("once"))
    assert stats["gpt-a:done"] == "1" and stats["gpt-a:in"] == "20"


def test_the_job_closes_from_its_counters_once_every_item_reported(
    valkey: ValkeyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = jobstate.client_for_url(valkey.url)
    job = "closing"
    jobstate.register(client, job, models=MODELS, pairs=3, unique=2, expires=600, extra={})
    client.hset(jobstate.dups_key(job), "2", "0")  # row 2 repeats row 0's pair
    replies = [
        report(client, job, index, model, f"r{index}{model}")
        for index, model in [(0, "gpt-a"), (0, "claude-b"), (1, "gpt-a")]
    ]
    assert not any(jobstate.completes(r) for r in replies)
    monkeypatch.setattr(tasks, "_redis", lambda: client)
    early = tasks.collect.run(job=job)  # sent too early (a stray copy): the job stays open
    assert early.get("open") and jobstate.progress(client, job).status != "done"  # type: ignore[union-attr]
    rows = list(jobstate.iter_records(client, job))
    assert rows[3]["error"].startswith("lost")  # (1, claude-b) has not reported yet

    last = report(client, job, 1, "claude-b", "r1claude-b")
    again = report(client, job, 1, "claude-b", "redelivered")  # the last task, redelivered
    assert jobstate.completes(last) and jobstate.completes(again) and not again & 1
    closed = tasks.collect.run(job=job)

    summary = closed["summary"]
    assert summary["rows"] == 3 and summary["duplicates"] == 1
    assert summary["models"]["gpt-a"]["items"] == 2
    assert summary["models"]["claude-b"]["items"] == 2
    assert jobstate.progress(client, job).status == "done"  # type: ignore[union-attr]
    rows = list(jobstate.iter_records(client, job))
    assert [(r["instruction"], r["model"]) for r in rows] == [
        ("q0", "gpt-a"),
        ("q0", "claude-b"),
        ("q1", "gpt-a"),
        ("q1", "claude-b"),
        ("q0", "gpt-a"),
        ("q0", "claude-b"),
    ]
    assert rows[3]["reasoning"] == "r1claude-b"
    assert rows[4] == rows[0]


def test_records_stream_in_batches_in_input_order(valkey: ValkeyProcess) -> None:
    client = jobstate.client_for_url(valkey.url)
    job = "streamed"
    pairs = 2 * jobstate.READ_BATCH + 7
    jobstate.register(
        client, job, models=["gpt-a"], pairs=pairs, unique=pairs, expires=600, extra={}
    )
    for index in reversed(range(pairs)):  # finishing order is not input order
        report(client, job, index, "gpt-a", "r")
    assert [r["instruction"] for r in jobstate.iter_records(client, job)] == [
        f"q{i}" for i in range(pairs)
    ]


def test_summary_counts_attempts_and_errors_by_kind(valkey: ValkeyProcess) -> None:
    client = jobstate.client_for_url(valkey.url)
    job = "kinds"
    jobstate.register(client, job, models=["gpt-a"], pairs=3, unique=3, expires=600, extra={})
    for index, kind, attempts in [(0, "", 1), (1, "auth", 1), (2, "rate_limit", 5)]:
        jobstate.record_outcome(
            client,
            job,
            "gpt-a",
            index,
            error=bool(kind),
            input_tokens=0,
            output_tokens=0,
            cached=False,
            expires=600,
            record="{}",
            attempts=attempts,
            error_kind=kind,
        )
    snapshot = jobstate.progress(client, job)
    assert snapshot is not None
    assert snapshot.per_model["gpt-a"].summary() == {
        "items": 3,
        "scored": 1,
        "errors": {"auth": 1, "rate_limit": 1},
        "attempts": 7,
        "cached": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
    }
