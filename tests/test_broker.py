"""The worker's Redis transport: kombu's, with one client per channel instead of one per ack."""

from __future__ import annotations

from kombu import Connection

from producer.local import ValkeyProcess
from workers import broker
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
