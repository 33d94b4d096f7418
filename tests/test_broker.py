"""The worker's Redis transport: kombu's, with one client per channel instead of one per ack."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from producer.local import ValkeyProcess
from workers import broker, recovery
from workers.app import create_app


def test_workers_get_it_for_redis_urls_only() -> None:
    app = create_app("redis://127.0.0.1:6379/0")
    assert app.conf.broker_transport is None  # producers and Flower keep kombu's own
    broker.use_in_worker(app)
    assert app.conf.broker_transport == broker.TRANSPORT
    sentinel = create_app("sentinel://127.0.0.1:26379/0")
    broker.use_in_worker(sentinel)
    assert sentinel.conf.broker_transport is None


def test_a_channel_reuses_one_client_and_still_acknowledges(valkey: ValkeyProcess) -> None:
    with Connection(valkey.url, transport=broker.TRANSPORT) as connection:
        channel = connection.channel()
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.ping()
        queue = connection.SimpleQueue("ibt.test.broker")
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()
        client = channel._create_client()
        assert client.hlen(channel.unacked_key) == 0  # the ack really removed it


def intercept_scripts(
    monkeypatch: pytest.MonkeyPatch, before: Callable[[str, list[Any]], None]
) -> None:
    """Run ``before(name, args)`` ahead of every Lua script the transport sends (it may
    block, record or raise)."""
    real_script = broker._script

    def wrapped(name: str, redis_client: Any) -> Any:
        script = real_script(name, redis_client)

        def call(*, keys: Any, args: Any, client: Any) -> Any:
            before(name, list(args))
            return script(keys=keys, args=args, client=client)

        return call

    monkeypatch.setattr(broker, "_script", wrapped)


def _held(connection: Connection, queue: Queue, count: int) -> list[Any]:
    bound = queue.bind(connection.default_channel)
    bound.declare()
    producer = connection.Producer()
    for n in range(count):
        producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key)
    return [bound.get(no_ack=False) for _ in range(count)]


def test_acknowledgements_made_while_one_is_sent_go_in_its_next_command(
    valkey: ValkeyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    client: Any = redis.Redis.from_url(valkey.url)
    queue = Queue("ibt.test.acks", Exchange("ibt.test.acks", type="direct"), routing_key="a")
    with Connection(valkey.url, transport=broker.TRANSPORT) as connection:
        messages = _held(connection, queue, 50)
        qos = connection.default_channel.qos
        tags = [m.delivery_tag for m in messages]
        assert all(client.hexists("unacked", t) for t in tags)
        assert client.scard(recovery.held_key(qos.owner)) == 50
        sent: list[list[str]] = []
        first_sending, release = threading.Event(), threading.Event()

        def hold_the_first(name: str, args: list[Any]) -> None:
            if name == "held_remove":
                sent.append([str(a) for a in args])
                if len(sent) == 1:
                    first_sending.set()
                    assert release.wait(30)

        intercept_scripts(monkeypatch, hold_the_first)
        first = threading.Thread(target=messages[0].ack)
        first.start()
        assert first_sending.wait(30)
        # Every other acknowledgement returns at once: its tag waits for the sender.
        others = [threading.Thread(target=m.ack) for m in messages[1:]]
        for thread in others:
            thread.start()
        for thread in others:
            thread.join(30)
        assert not any(thread.is_alive() for thread in others)
        assert all(client.hexists("unacked", t) for t in tags[1:])
        release.set()
        first.join(30)
        assert sent == [[tags[0]], tags[1:]]  # two commands for fifty acknowledgements
        assert not any(client.hexists("unacked", t) for t in tags)
        assert client.zscore("unacked_index", tags[-1]) is None
        assert not client.exists(recovery.held_key(qos.owner))


def test_a_failed_acknowledgement_is_sent_with_the_next_or_when_the_channel_closes(
    valkey: ValkeyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    client: Any = redis.Redis.from_url(valkey.url)
    queue = Queue("ibt.test.acks2", Exchange("ibt.test.acks2", type="direct"), routing_key="b")
    with Connection(valkey.url, transport=broker.TRANSPORT) as connection:
        one, two, three = _held(connection, queue, 3)
        failing = [True]

        def flaky(name: str, _: list[Any]) -> None:
            if name == "held_remove" and failing:
                failing.pop()
                raise redis.exceptions.ConnectionError("the broker is restarting")

        intercept_scripts(monkeypatch, flaky)
        with pytest.raises(redis.exceptions.ConnectionError):
            one.ack()
        assert client.hexists("unacked", one.delivery_tag)  # kept for the next send
        two.ack()
        assert not client.hexists("unacked", one.delivery_tag)
        assert not client.hexists("unacked", two.delivery_tag)
        # A tag left pending (its sender failed) is sent when the channel closes.
        failing.append(True)
        with pytest.raises(redis.exceptions.ConnectionError):
            three.ack()
        assert client.hexists("unacked", three.delivery_tag)
        connection.default_channel.close()
    assert not client.hexists("unacked", three.delivery_tag)


def test_a_consumer_takes_its_backlog_recorded_in_the_same_command(
    valkey: ValkeyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before each BRPOP a worker's channel takes what is queued, up to its free prefetch,
    and each message is in ``unacked`` and the held set from the moment it leaves the queue:
    no second command records it (lua/take_queued.lua)."""
    client: Any = redis.Redis.from_url(valkey.url)
    queue = Queue("ibt.test.take", Exchange("ibt.test.take", type="direct"), routing_key="t")
    with Connection(valkey.url, transport=broker.TRANSPORT) as connection:
        channel = connection.default_channel
        bound = queue.bind(channel)
        bound.declare()
        producer = connection.Producer()
        for n in range(5):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key)
        channel.basic_qos(0, 3, False)  # a prefetch of three
        seen: list[Any] = []
        recorded_at_delivery: list[bool] = []

        def on_message(message: Any) -> None:
            tag = message.delivery_tag
            recorded_at_delivery.append(
                bool(client.hexists("unacked", tag))
                and bool(client.sismember(recovery.held_key(channel.qos.owner), tag))
            )
            seen.append(message)

        channel.basic_consume(queue.name, False, on_message, "ibt-test-take")
        assert channel.take_queued() == 0  # not driven by an event loop: BRPOP only
        connection.transport.in_event_loop = True
        calls: list[str] = []
        intercept_scripts(monkeypatch, lambda name, _: calls.append(name))
        assert channel.take_queued() == 3
        assert [m.payload["n"] for m in seen] == [0, 1, 2]  # oldest first, as BRPOP pops
        assert recorded_at_delivery == [True, True, True]
        assert calls == ["take_queued"]  # recorded by the take itself, not again on append
        assert client.llen(queue.name) == 2
        assert channel.take_queued() == 0  # the prefetch is full
        for message in seen:
            message.ack()
        assert channel.take_queued() == 2
        assert client.llen(queue.name) == 0
        for message in seen[3:]:
            message.ack()
        assert not any(client.hexists("unacked", m.delivery_tag) for m in seen)


def test_a_task_acknowledges_its_message_in_its_own_end_of_task_round_trip(
    valkey: ValkeyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    client: Any = redis.Redis.from_url(valkey.url)
    queue = Queue("ibt.test.ackin", Exchange("ibt.test.ackin", type="direct"), routing_key="i")
    with Connection(valkey.url, transport=broker.TRANSPORT) as connection:
        bound = queue.bind(connection.default_channel)
        bound.declare()
        producer = connection.Producer()
        for task_id in ("task-1", "task-2"):
            producer.publish(
                {"n": task_id},
                exchange=queue.exchange,
                routing_key=queue.routing_key,
                headers={"id": task_id},
            )
        first, second = bound.get(no_ack=False), bound.get(no_ack=False)
        assert broker.acknowledge_in(client.pipeline(), "not-held-here") is None
        pipe = client.pipeline(transaction=False)
        pipe.set("ibt.test.record", 1)  # the task's own writes come first
        done = broker.acknowledge_in(pipe, "task-1")
        assert done is not None
        pipe.execute()
        done()
        assert not client.hexists("unacked", first.delivery_tag)
        assert client.hexists("unacked", second.delivery_tag)
        calls: list[str] = []
        intercept_scripts(monkeypatch, lambda name, _: calls.append(name))
        first.ack()  # Celery's acknowledgement: nothing left to send
        assert calls == []
        second.ack()  # a task that did not (a retry, an error): sent as before
        assert calls == ["held_remove"]
        assert not client.hexists("unacked", second.delivery_tag)
        assert broker.acknowledge_in(client.pipeline(), "task-1") is None  # forgotten
        assert not client.exists(recovery.held_key(connection.default_channel.qos.owner))
