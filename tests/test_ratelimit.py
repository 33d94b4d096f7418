"""The shared limiter: several processes drawing from one budget never exceed it."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import redis

from producer.local import ValkeyProcess
from workers import ratelimit
from workers.models import ModelSpec

# rps high enough that only the minute's budget binds within the test's two seconds.
SPEC = ModelSpec(name="gpt-limited", provider="openai", model="gpt-limited", rpm=40, rps=1000)


def grab(url: str, spec: ModelSpec, seconds: float, start, results) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(url, decode_responses=True)
    client.ping()
    # The limiter's imports happen on first use: done here, so no process starts late.
    warmup = ModelSpec(name="warmup", provider="openai", model="warmup", rpm=10**6)
    ratelimit.wait_seconds(client, url, warmup, 10)
    start.wait(30)  # a barrier: all processes begin together, so they really contend
    granted = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ratelimit.wait_seconds(client, url, spec, 10) == 0:
            granted += 1
    results.put(granted)


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    server = ValkeyProcess(tmp_path_factory.mktemp("rl"), appendonly=False)
    server.start()
    yield server
    server.stop()


def contend(url: str, spec: ModelSpec, seconds: float) -> list[int]:
    """Requests granted to each of 4 processes that ask as fast as they can for ``seconds``."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start = context.Barrier(5)
    workers = [
        context.Process(target=grab, args=(url, spec, seconds, start, results)) for _ in range(4)
    ]
    for process in workers:
        process.start()
    start.wait(30)
    granted = [results.get(timeout=60) for _ in workers]
    for process in workers:
        process.join(timeout=30)
    return granted


def test_concurrent_processes_never_exceed_the_budget(valkey: ValkeyProcess) -> None:
    granted = contend(valkey.url, SPEC, 2.0)
    assert sum(granted) == SPEC.rpm  # the whole budget, and not one request more
    assert sum(1 for g in granted if g > 0) >= 2  # they really competed for it


def test_a_minutes_budget_is_spread_over_the_minute(valkey: ValkeyProcess) -> None:
    spec = ModelSpec(name="gpt-spread", provider="openai", model="gpt-spread", rpm=6000)
    assert ratelimit.per_second(spec) is not None
    # Half a second inside one 1 s window: exactly rpm/60 leave, not the minute's 6,000.
    granted = contend(valkey.url, spec, 0.5)
    assert sum(granted) == 100
    assert sum(1 for g in granted if g > 0) >= 2


def test_token_budget(valkey: ValkeyProcess) -> None:
    spec = ModelSpec(name="claude-tpm", provider="anthropic", model="x", tpm=1000)
    client = redis.Redis.from_url(valkey.url, decode_responses=True)
    granted = sum(ratelimit.wait_seconds(client, valkey.url, spec, 300) == 0 for _ in range(10))
    assert granted == 3
    assert ratelimit.wait_seconds(client, valkey.url, spec, 300) > 0


def test_pause_holds_every_worker(valkey: ValkeyProcess) -> None:
    spec = ModelSpec(name="gpt-paused", provider="openai", model="x")
    client = redis.Redis.from_url(valkey.url, decode_responses=True)
    assert ratelimit.wait_seconds(client, valkey.url, spec, 1) == 0
    ratelimit.pause(client, spec, 5.0)
    other = redis.Redis.from_url(valkey.url, decode_responses=True)
    assert 4.0 < ratelimit.wait_seconds(other, valkey.url, spec, 1) <= 5.0
    ratelimit.pause(client, spec, 1.0)  # a shorter pause does not cut a longer one short
    assert ratelimit.wait_seconds(other, valkey.url, spec, 1) > 4.0


def test_estimate_is_conservative() -> None:
    assert ratelimit.estimate_tokens("x" * 400, 512) == 101 + 512
    assert Path(ratelimit.__file__).name == "ratelimit.py"
