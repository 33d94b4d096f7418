"""A dead worker's in-flight messages run elsewhere within seconds, on the default 600 s
visibility timeout (workers/recovery.py); real valkey, simulator and ``ibt worker``s."""

from __future__ import annotations

import collections
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from producer import job as jobs
from producer.inputs import Pair
from producer.local import ValkeyProcess
from producer.simulator import simulated_score
from producer.simulator_process import SimulatorProcess
from tests.conftest import OPENAI_MODEL, TEST_KEY, Cluster
from workers import broker, jobstate, recovery
from workers.models import ModelRegistry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]
# The target: a SIGKILLed worker's in-flight tasks start on another worker within this.
RESTART_WITHIN = 30.0


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Own broker and simulator; workers on the default visibility timeout (600 s)."""
    latency = getattr(request, "param", 1.0)
    valkey = ValkeyProcess(tmp_path / "valkey")
    valkey.start()
    sim = SimulatorProcess(latency=latency, api_key=TEST_KEY)
    sim.start()
    cluster = Cluster(valkey, sim, tmp_path, env_overrides={"IBT_VISIBILITY_TIMEOUT": None})
    yield cluster
    cluster.stop()
    sim.stop()
    valkey.stop()


def pairs_of(n: int, tag: str) -> list[Pair]:
    return [Pair(f"{tag} question {i}", f"{tag} answer {i}") for i in range(n)]


def assert_complete(result: jobs.JobResult, pairs: list[Pair]) -> None:
    """Every row exactly once, in input order, scored, and counted once."""
    assert [(r["instruction"], r["model"]) for r in result.results] == [
        (p.instruction, OPENAI_MODEL) for p in pairs
    ]
    for record in result.results:
        assert record["score"] == str(
            simulated_score(record["model"], record["instruction"], record["generation"])
        ), record
    assert result.summary["items"] == len(pairs)
    assert result.summary["lost"] == 0


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.05)


def wait_job(cluster: Cluster, job: str, timeout: float) -> jobs.JobResult:
    """The finished job, or TimeoutError (kombu alone would wait out the 600 s timeout)."""
    deadline = time.monotonic() + timeout

    def check_alive() -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job not done within {timeout:.0f}s")

    return jobs.wait(cluster.app, job, check_alive=check_alive, poll_interval=0.2)


def done(cluster: Cluster, job: str) -> int:
    snapshot = jobstate.progress(jobstate.client_for_url(cluster.url), job)
    return snapshot.done if snapshot is not None else 0


def owners_of(client: Any, name: str) -> list[str]:
    """The recovery owners (consuming channels) of the worker started as ``name``."""
    return [m for m in client.smembers(recovery.REGISTRY) if m.startswith(f"{name}-")]


def held_by(client: Any, name: str) -> int:
    return sum(int(client.scard(recovery.held_key(o))) for o in owners_of(client, name))


def repeated_calls(cluster: Cluster, after: float) -> list[float]:
    """For each call first made before ``after`` and made again later: when it was again."""
    times: dict[str, list[float]] = collections.defaultdict(list)
    for entry in cluster.simulator.stats()["log"]:
        times[entry["key"]].append(float(entry["t"]))
    return sorted(t[1] for t in times.values() if len(t) > 1 and t[0] < after <= t[1])


def test_sigkilled_worker_tasks_run_elsewhere_within_seconds(stack: Cluster) -> None:
    cluster = stack
    client = jobstate.client_for_url(cluster.url)
    victim = cluster.start_worker([OPENAI_MODEL], concurrency=8, name="victim")
    cluster.start_worker([OPENAI_MODEL], concurrency=8, name="survivor")
    cluster.wait_ready(2)
    pairs = pairs_of(96, "kill")
    job = jobs.submit(cluster.app, pairs, ModelRegistry().resolve_all([OPENAI_MODEL]))

    wait_for(
        lambda: done(cluster, job) >= 16 and held_by(client, "victim") >= 4,
        30,
        "the victim holds in-flight tasks",
    )
    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    result = wait_job(cluster, job, 60)
    finished = time.time() - killed_at

    assert_complete(result, pairs)
    again = [t - killed_at for t in repeated_calls(cluster, killed_at)]
    print(
        f"\nSIGKILL: {len(again)} in-flight calls ran again {again[0]:.1f}-{again[-1]:.1f}s "
        f"after the kill; job done {finished:.1f}s after it (visibility timeout 600s)"
    )
    assert 1 <= len(again) <= 8  # the victim's in-flight calls, each paid once more
    assert again[-1] < RESTART_WITHIN
    assert finished < 60


def test_stalled_worker_resumes_without_duplicates(stack: Cluster) -> None:
    cluster = stack
    client = jobstate.client_for_url(cluster.url)
    stalled = cluster.start_worker([OPENAI_MODEL], concurrency=4, name="stalled")
    cluster.start_worker([OPENAI_MODEL], concurrency=4, name="other")
    cluster.wait_ready(2)
    specs = ModelRegistry().resolve_all([OPENAI_MODEL])
    pairs = pairs_of(120, "stall")
    job = jobs.submit(cluster.app, pairs, specs)

    wait_for(
        lambda: done(cluster, job) >= 12 and held_by(client, "stalled") >= 2,
        30,
        "the stalled worker holds tasks",
    )
    owners = owners_of(client, "stalled")
    stopped_at = time.time()
    stalled.send_signal(signal.SIGSTOP)
    try:
        # Longer than a heartbeat TTL: what it held is restored and runs on the other worker.
        wait_for(
            lambda: held_by(client, "stalled") == 0 and repeated_calls(cluster, stopped_at),
            recovery.HEARTBEAT_TTL + 20,
            "the stalled worker's tasks run elsewhere",
        )
    finally:
        stalled.send_signal(signal.SIGCONT)
    # It beats again under the same owner, and records what it is given from now on.
    wait_for(
        lambda: any(client.exists(recovery.alive_key(o)) for o in owners),
        recovery.HEARTBEAT_TTL,
        "the resumed worker beats again",
    )
    result = wait_job(cluster, job, 60)
    assert_complete(result, pairs)
    calls = collections.Counter(e["key"] for e in cluster.simulator.stats()["log"])
    repeated = sum(n - 1 for n in calls.values())
    print(f"\nSIGSTOP + SIGCONT: {len(calls)} distinct calls, {repeated} paid twice")
    # The bound (workers/recovery.py): what the stalled worker held, here its prefetch of 4.
    assert len(calls) == len(pairs) and repeated <= 4

    seen_held = []
    more = pairs_of(40, "after")
    later = jobs.submit(cluster.app, more, specs)
    jobs.wait(
        cluster.app,
        later,
        on_progress=lambda _: seen_held.append(held_by(client, "stalled")),
        poll_interval=0.05,
    )
    assert max(seen_held) > 0
    assert_complete(wait_job(cluster, later, 30), more)


def test_broker_restart_while_restoring(stack: Cluster) -> None:
    cluster = stack
    client = jobstate.client_for_url(cluster.url)
    victim = cluster.start_worker([OPENAI_MODEL], concurrency=8, name="victim")
    cluster.start_worker([OPENAI_MODEL], concurrency=8, name="survivor")
    cluster.wait_ready(2)
    pairs = pairs_of(96, "restart")
    job = jobs.submit(cluster.app, pairs, ModelRegistry().resolve_all([OPENAI_MODEL]))

    wait_for(
        lambda: done(cluster, job) >= 16 and held_by(client, "victim") >= 4,
        30,
        "the victim holds in-flight tasks",
    )
    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    cluster.valkey.stop()  # SIGTERM: Valkey flushes its append-only file and exits
    cluster.valkey.start()  # same port, same data directory
    # The victim's records outlived the restart: its messages are still to be restored.
    assert held_by(client, "victim") > 0
    result = wait_job(cluster, job, 60)
    finished = time.time() - killed_at

    assert_complete(result, pairs)
    again = [t - killed_at for t in repeated_calls(cluster, killed_at)]
    print(f"\nSIGKILL + broker restart: job done {finished:.1f}s after the kill")
    assert again and again[-1] < RESTART_WITHIN + recovery.HEARTBEAT_TTL


QUEUE = "ibt.test.recovery"


def _deliver(connection: Connection, queue: Queue, count: int) -> list[Any]:
    """``count`` messages taken from ``queue`` and left unacknowledged, as a worker does."""
    bound = queue.bind(connection.default_channel)
    return [bound.get(no_ack=False) for _ in range(count)]


def test_monitors_restore_held_messages_once_and_leave_waiting_ones(
    valkey: ValkeyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    client: Any = redis.Redis.from_url(valkey.url)
    queue = Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)
    other = Queue(QUEUE + ".live", Exchange(QUEUE + ".live", type="direct"), routing_key="live")
    with (
        Connection(valkey.url, transport=broker.TRANSPORT) as dead,
        Connection(valkey.url, transport=broker.TRANSPORT) as live,
    ):
        for q, n in ((queue, 230), (other, 5)):
            q.bind(dead.default_channel).declare()
            producer = dead.Producer()
            for i in range(n):
                producer.publish({"n": i}, exchange=q.exchange, routing_key=q.routing_key)
        taken = _deliver(dead, queue, 200)
        taken[0].ack()
        held_live = _deliver(live, other, 2)
        owner = dead.default_channel.qos.owner
        live_owner = live.default_channel.qos.owner
        # A tag recorded but already gone from unacked is simply dropped.
        client.sadd(recovery.held_key(owner), "acked-elsewhere")
        assert client.scard(recovery.held_key(owner)) == 200
        client.delete(recovery.alive_key(owner))  # the dead consumer's heartbeat lapses
        waiting = client.lrange(QUEUE, 0, -1)
        waiting_other = client.lrange(other.name, 0, -1)
        unacked_live = {
            t: client.hget("unacked", t) for t in client.smembers(recovery.held_key(live_owner))
        }
        assert len(waiting) == 30 and len(unacked_live) == 2

        with (
            Connection(valkey.url, transport=broker.TRANSPORT) as one,
            Connection(valkey.url, transport=broker.TRANSPORT) as two,
        ):
            # Nothing is trusted while the broker is younger than a TTL.
            assert recovery.sweep(one.default_channel, min_uptime=1e9).waited
            assert client.llen(QUEUE) == 30
            # The worst race: both monitors have read the dead owner's held set and payloads
            # before either restores anything (each one's restore script waits for the other).
            both_read = threading.Barrier(2, timeout=10)
            script_text = recovery.script_text

            def after_both_read(name: str) -> str:
                if name == "recovery_restore":
                    both_read.wait()
                return script_text(name)

            sweeps: list[recovery.Sweep] = []

            def monitor(connection: Connection) -> None:
                channel = connection.default_channel
                sweeps.append(recovery.sweep(channel, skip=[live_owner], min_uptime=0))

            with monkeypatch.context() as patch:
                patch.setattr(recovery, "script_text", after_both_read)
                threads = [threading.Thread(target=monitor, args=(c,)) for c in (one, two)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(30)
            assert len(sweeps) == 2
            assert sum(s.restored for s in sweeps) == 199  # each held message once
            assert all(s.restored + s.dropped == 200 for s in sweeps)  # both tried them all
            # A live owner (even one not skipped) is never touched.
            assert recovery.sweep(one.default_channel, min_uptime=0).restored == 0

        after = client.lrange(QUEUE, 0, -1)
        # kombu pushes on the left and pops on the right: the waiting messages are untouched
        # at the tail, the restored ones are next to be consumed, each exactly once.
        assert after[: len(waiting)] == waiting
        restored = after[len(waiting) :]
        expected = {m.delivery_tag for m in taken[1:]}
        tags = [json.loads(m)["properties"]["delivery_tag"] for m in restored]
        assert len(tags) == len(set(tags)) == 199 and set(tags) == expected
        assert all(json.loads(m)["headers"]["redelivered"] for m in restored)
        assert client.lrange(other.name, 0, -1) == waiting_other
        assert {t: client.hget("unacked", t) for t in unacked_live} == unacked_live
        assert client.hlen("unacked") == client.zcard("unacked_index") == 2
        assert not client.exists(recovery.held_key(owner))
        assert client.scard(recovery.held_key(live_owner)) == 2
        assert owner.encode() not in client.smembers(recovery.REGISTRY)
        for message in held_live:
            message.ack()
        assert not client.exists(recovery.held_key(live_owner))


def test_a_monitor_that_read_before_another_restored_leaves_the_new_holder_alone(
    valkey: ValkeyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Monitor one reads the dead owner's held set; monitor two restores the message and a
    live consumer takes it again (same delivery tag, back in ``unacked``); then monitor one's
    restore runs on what it read. It must not take the message from its new holder."""
    client: Any = redis.Redis.from_url(valkey.url)
    queue = Queue(QUEUE + ".stale", Exchange(QUEUE + ".stale", type="direct"), routing_key="s")
    with (
        Connection(valkey.url, transport=broker.TRANSPORT) as dead,
        Connection(valkey.url, transport=broker.TRANSPORT) as live,
        Connection(valkey.url, transport=broker.TRANSPORT) as one,
        Connection(valkey.url, transport=broker.TRANSPORT) as two,
    ):
        queue.bind(dead.default_channel).declare()
        dead.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key=queue.routing_key)
        (taken,) = _deliver(dead, queue, 1)
        owner = dead.default_channel.qos.owner
        client.delete(recovery.alive_key(owner))
        live_owner = live.default_channel.qos.owner
        real_restore = recovery._restore
        redelivered: list[Any] = []
        sweeps: dict[str, recovery.Sweep] = {}

        def stale_restore(channel: Any, redis_client: Any, holding: Any, payloads: Any) -> Any:
            if channel is one.default_channel and not sweeps:
                sweeps["two"] = recovery.sweep(two.default_channel, min_uptime=0)
                redelivered.extend(_deliver(live, queue, 1))
            return real_restore(channel, redis_client, holding, payloads)

        monkeypatch.setattr(recovery, "_restore", stale_restore)
        sweeps["one"] = recovery.sweep(one.default_channel, skip=[live_owner], min_uptime=0)

        assert sweeps["two"].restored == 1
        assert (sweeps["one"].restored, sweeps["one"].dropped) == (0, 1)
        (message,) = redelivered
        assert message.delivery_tag == taken.delivery_tag
        # The new holder keeps it: still unacknowledged, recorded as its, and not queued again.
        assert client.hexists("unacked", message.delivery_tag)
        assert client.sismember(recovery.held_key(live_owner), message.delivery_tag)
        assert client.llen(queue.name) == 0
        message.ack()
        assert not client.hexists("unacked", message.delivery_tag)
