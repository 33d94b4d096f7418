"""The result cache and its claims, on a real Valkey: stable keys, leases that lapse or live."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from producer import job as jobs
from producer.inputs import Pair
from producer.local import ValkeyProcess
from tests.conftest import OPENAI_MODEL, Cluster
from workers import cache, claims, jobstate
from workers.models import ModelRegistry
from workers.parsing import Verdict

pytestmark = pytest.mark.timeout(120)
NOT_CANCELLED = "ibt:job:no-such-job:cancelled"
PAUSE_KEY = "ibt:test:no-pause"


def wait_for(condition: Callable[[], bool], timeout: float, poll: float = 0.05) -> float:
    """Seconds until ``condition()`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(poll)
    return time.monotonic() - started


@pytest.fixture
def client(valkey: ValkeyProcess) -> Iterator[redis.Redis]:
    c = jobstate.client_for_url(valkey.url)
    yield c
    claims.leases(c).stop()
    c.close()


def fresh_key() -> str:
    return uuid.uuid4().hex


# --- the cache key --------------------------------------------------------------------------


def test_simulated_judge_key_does_not_depend_on_the_simulators_port() -> None:
    spec = ModelRegistry().resolve("simulated-openai")
    assert spec.simulated
    first = cache.cache_key(spec, "http://127.0.0.1:41001/v1", "q", "a", None)
    second = cache.cache_key(spec, "http://127.0.0.1:52002/v1", "q", "a", None)
    assert first == second
    anthropic = ModelRegistry().resolve("simulated-anthropic")
    assert cache.cache_key(anthropic, "http://127.0.0.1:41001", "q", "a", None) == (
        cache.cache_key(anthropic, "http://127.0.0.1:52002", "q", "a", None)
    )


def test_real_judge_key_still_depends_on_the_endpoint() -> None:
    spec = ModelRegistry().resolve(OPENAI_MODEL)
    assert not spec.simulated
    official = cache.cache_key(spec, "https://api.openai.com/v1", "q", "a", None)
    local = cache.cache_key(spec, "http://127.0.0.1:8000/v1", "q", "a", None)
    assert official != local


def test_how_hard_a_reasoning_judge_thinks_is_part_of_the_key() -> None:
    from dataclasses import replace

    o4 = ModelRegistry().resolve("o4-mini")
    base = cache.cache_key(o4, None, "q", "a", None)
    low, high = (replace(o4, reasoning_effort=e) for e in ("low", "high"))
    assert len({base, cache.cache_key(low, None, "q", "a", None),
                cache.cache_key(high, None, "q", "a", None)}) == 3  # fmt: skip
    claude = ModelRegistry().resolve("claude-3-7-sonnet-latest")
    thinking = [replace(claude, thinking_budget=b, max_tokens=b + 512) for b in (1024, 4096)]
    assert cache.cache_key(thinking[0], None, "q", "a", None) != cache.cache_key(
        replace(thinking[1], max_tokens=1536), None, "q", "a", None
    )


# --- leases ---------------------------------------------------------------------------------


def test_a_renewed_claim_outlives_its_lease(client: redis.Redis) -> None:
    leases = claims.Leases(client, lease=1.0, every=0.25)
    claim = cache.CLAIM_PREFIX + fresh_key()
    assert client.set(claim, "holder", nx=True, px=1000)
    leases.hold(claim, "holder", hold_for=60)
    try:
        deadline = time.monotonic() + 3.5  # three and a half leases
        while time.monotonic() < deadline:
            assert client.get(claim) == "holder", "the claim lapsed while renewed"
            time.sleep(0.05)
        assert 0 < int(client.pttl(claim)) <= 1000  # type: ignore[arg-type]
    finally:
        leases.stop()


def test_a_claim_lapses_within_its_lease_once_renewal_stops(client: redis.Redis) -> None:
    """What a worker process that died leaves behind: nobody renews its claims any more."""
    leases = claims.Leases(client, lease=1.0, every=0.25)
    claim = cache.CLAIM_PREFIX + fresh_key()
    assert client.set(claim, "dead", nx=True, px=1000)
    leases.hold(claim, "dead", hold_for=60)
    wait_for(lambda: leases.renew() == 1 and int(client.pttl(claim)) > 900, 2)  # type: ignore[arg-type]
    leases.stop()
    assert wait_for(lambda: client.get(claim) is None, 3) <= 1.5


def test_renewal_stops_at_the_longest_hold(client: redis.Redis) -> None:
    """A task that never settles cannot keep its claim forever."""
    leases = claims.Leases(client, lease=1.0, every=0.25)
    claim = cache.CLAIM_PREFIX + fresh_key()
    assert client.set(claim, "stuck", nx=True, px=1000)
    leases.hold(claim, "stuck", hold_for=1.5)
    try:
        assert 1.5 <= wait_for(lambda: client.get(claim) is None, 5) <= 3.5
        assert leases.held() == []
    finally:
        leases.stop()


def test_renewal_never_extends_another_owners_claim(client: redis.Redis) -> None:
    leases = claims.Leases(client, lease=60.0, every=10)
    mine, lapsed, taken = (cache.CLAIM_PREFIX + fresh_key() for _ in range(3))
    client.set(mine, "me", px=1000)
    client.set(taken, "someone-else", px=1000)
    for claim in (mine, lapsed, taken):
        leases.hold(claim, "me", hold_for=60)
    try:
        assert leases.renew() == 1
        assert int(client.pttl(mine)) > 1000  # type: ignore[arg-type]
        assert 0 < int(client.pttl(taken)) <= 1000  # type: ignore[arg-type]
        assert client.exists(lapsed) == 0
        assert leases.held() == [(mine, "me")]
    finally:
        leases.stop()


def test_a_dead_runs_claim_is_taken_over_within_the_lease(client: redis.Redis) -> None:
    key = fresh_key()
    # as a run that died mid-call leaves it: taken by lookup, never renewed again
    assert client.set(cache.CLAIM_PREFIX + key, "dead-run", nx=True, ex=claims.LEASE_SECONDS)

    def taken() -> bool:
        _, claimed, _, _ = cache.lookup(client, key, "re-run", 90, PAUSE_KEY, NOT_CANCELLED)
        return claimed

    assert wait_for(taken, claims.LEASE_SECONDS + 3, poll=0.2) <= claims.LEASE_SECONDS + 1
    cache.settle(client, key, "re-run", None, 60)


def test_lookup_claims_are_renewed_by_this_process(client: redis.Redis) -> None:
    key = fresh_key()
    claim = cache.CLAIM_PREFIX + key
    hit, claimed, paused, _ = cache.lookup(client, key, "worker-task", 90, PAUSE_KEY, NOT_CANCELLED)
    assert (hit, claimed, paused) == (None, True, False)
    assert (claim, "worker-task") in claims.leases(client).held()
    lowest = [claims.LEASE_SECONDS * 1000]

    def extended() -> bool:
        left = int(client.pttl(claim))  # type: ignore[arg-type]
        assert left > 0, "the claim lapsed"
        lowest[0] = min(lowest[0], left)
        return left > lowest[0] + 500

    wait_for(extended, claims.RENEW_SECONDS + 3)
    cache.settle(client, key, "worker-task", None, 60)
    assert client.exists(claim) == 0
    assert (claim, "worker-task") not in claims.leases(client).held()


def test_settle_releases_only_its_own_claim(client: redis.Redis) -> None:
    key = fresh_key()
    claim = cache.CLAIM_PREFIX + key
    _, claimed, _, _ = cache.lookup(client, key, "owner", 90, PAUSE_KEY, NOT_CANCELLED)
    assert claimed
    _, claimed_too, _, _ = cache.lookup(client, key, "other", 90, PAUSE_KEY, NOT_CANCELLED)
    assert not claimed_too
    cache.settle(client, key, "other", None, 60)
    assert client.get(claim) == "owner"
    assert (claim, "owner") in claims.leases(client).held()
    cache.settle(client, key, "owner", {"score": 4, "reasoning": "fine"}, 60)
    assert client.exists(claim) == 0
    assert claims.leases(client).held() == []
    hit, _, _, _ = cache.lookup(client, key, "later", 90, PAUSE_KEY, NOT_CANCELLED)
    assert hit == {"score": 4, "reasoning": "fine"}
    cache.settle(client, key, "later", None, 60)


def test_waits_for_a_claim_are_bounded_by_hold_and_lease() -> None:
    assert claims.max_waits(90, 1.0) == 90 + claims.LEASE_SECONDS + 1
    assert claims.max_waits(90, 2.0) * 2.0 >= 90 + claims.LEASE_SECONDS


# --- end to end -----------------------------------------------------------------------------


def key_of(cluster: Cluster, pair: Pair) -> str:
    """The cache key a gpt-test worker of ``cluster`` computes for ``pair``."""
    spec = ModelRegistry().resolve(OPENAI_MODEL)
    base_url = cluster.simulator.openai_base_url
    return cache.cache_key(spec, base_url, pair.instruction, pair.generation, None)


def run(cluster: Cluster, pairs: list[Pair]) -> jobs.JobResult:
    specs = ModelRegistry().resolve_all([OPENAI_MODEL])
    return jobs.wait(cluster.app, jobs.submit(cluster.app, pairs, specs), poll_interval=0.1)


def test_a_claim_left_by_a_dead_run_delays_a_rerun_by_seconds(cluster: Cluster) -> None:
    pair = Pair(f"Stale claim {fresh_key()}", "An answer judged once")
    client = jobstate.client_for_url(cluster.url)
    cluster.simulator.reset()
    left = time.time()
    assert client.set(
        cache.CLAIM_PREFIX + key_of(cluster, pair), "ibt-dead-0-gpt-test", ex=claims.LEASE_SECONDS
    )
    started = time.monotonic()
    result = run(cluster, [pair])
    elapsed = time.monotonic() - started

    assert result.results[0]["score"] is not None
    assert elapsed < 15, f"the re-run waited {elapsed:.1f}s for a dead claim"
    log = cluster.simulator.stats()["log"]
    assert len(log) == 1, "the pair was paid for more than once"
    # the claim was honoured while it lived: the call came only after it lapsed
    assert log[0]["t"] >= left + claims.LEASE_SECONDS - 0.5


def test_a_live_call_keeps_its_claim_past_the_lease(cluster: Cluster) -> None:
    """A second job sharing a pair whose call outlasts the lease waits for it, then hits."""
    slow = claims.LEASE_SECONDS + 2
    pair = Pair(f"Slow call {fresh_key()}", f"Answer <<sim:latency={slow}>>")
    specs = ModelRegistry().resolve_all([OPENAI_MODEL])
    cluster.simulator.reset()
    first = jobs.submit(cluster.app, [pair], specs)
    wait_for(lambda: cluster.simulator.stats()["requests"] >= 1, 10)
    second = jobs.submit(cluster.app, [pair], specs)
    first_result = jobs.wait(cluster.app, first, poll_interval=0.1)
    second_result = jobs.wait(cluster.app, second, poll_interval=0.1)

    assert cluster.simulator.stats()["requests"] == 1
    assert first_result.results[0]["score"] == second_result.results[0]["score"] is not None
    assert second_result.summary["models"][OPENAI_MODEL]["cached"] == 1


def test_a_warm_shutdown_releases_the_claims_of_its_calls(cluster: Cluster, tmp_path: Path) -> None:
    """An orderly stop lets the call in flight finish and give up its claim at once."""
    models_file = tmp_path / "models.toml"
    models_file.write_text('[models."gpt-stopping"]\nprovider = "openai"\nmodel = "gpt-test"\n')
    spec = ModelRegistry.load(str(models_file)).resolve("gpt-stopping")
    worker = cluster.start_worker(["gpt-stopping"], collect=False, IBT_MODELS_FILE=str(models_file))
    cluster.wait_ready()
    pair = Pair(f"Stopping {fresh_key()}", "Answer <<sim:latency=2>>")
    key = cache.cache_key(
        spec, cluster.simulator.openai_base_url, pair.instruction, pair.generation, None
    )
    client = jobstate.client_for_url(cluster.url)
    cluster.simulator.reset()
    job = jobs.submit(cluster.app, [pair], [spec])
    wait_for(lambda: cluster.simulator.stats()["requests"] >= 1, 15)
    assert client.get(cache.CLAIM_PREFIX + key) is not None

    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)

    # released, not left to lapse (a lease renewed a moment ago would still be alive)
    assert client.exists(cache.CLAIM_PREFIX + key) == 0
    assert client.exists(cache.CACHE_PREFIX + key) == 1
    assert jobs.wait(cluster.app, job, poll_interval=0.1).results[0]["score"] is not None


def test_cached_replies_are_parsed_on_read_and_old_entries_still_read(cluster: Cluster) -> None:
    """A parser fix reaches replies cached before it, for free; pre-raw entries still count.

    The first entry is what a run under an older parser left: a reply that parser could not
    read (a verdict stated in a sentence), kept raw; the second is a ``{score, reasoning}``
    entry as the cache stored verdicts before it kept replies.
    """
    tag = fresh_key()
    fixed, old = Pair(f"Fixed {tag}", "An answer"), Pair(f"Old entry {tag}", "An answer")
    client = jobstate.client_for_url(cluster.url)
    reply = "Clear and correct. I would give this a 4 out of 5."
    client.set(
        cache.CACHE_PREFIX + key_of(cluster, fixed),
        json.dumps({"reply": reply, "structured": False}),
    )
    client.set(
        cache.CACHE_PREFIX + key_of(cluster, old),
        json.dumps({"score": "3", "reasoning": "Kept from an old run."}),
    )
    cluster.simulator.reset()
    result = run(cluster, [fixed, old])

    assert cluster.simulator.stats()["requests"] == 0
    first, second = result.results
    assert (first["score"], first["reasoning"]) == ("4", "Clear and correct.")
    assert (second["score"], second["reasoning"]) == ("3", "Kept from an old run.")
    assert result.summary["models"][OPENAI_MODEL]["cached"] == 2


def test_an_entry_that_is_neither_a_reply_nor_a_verdict_is_a_miss(client: redis.Redis) -> None:
    key = fresh_key()
    client.set(cache.CACHE_PREFIX + key, json.dumps({"something": "else"}))
    hit, claimed, _, _ = cache.lookup(client, key, "reader", 90, PAUSE_KEY, NOT_CANCELLED)
    assert (hit, claimed) == (None, True)
    cache.settle(client, key, "reader", {"reply": "Fine.\nScore: 5", "structured": False}, 60)
    hit, _, _, _ = cache.lookup(client, key, "later", 90, PAUSE_KEY, NOT_CANCELLED)
    assert hit is not None and cache.verdict_of(hit) == Verdict(5, "Fine.")
    cache.settle(client, key, "later", None, 60)
