"""kombu's Redis transport, minus a client construction on every acknowledgement.

kombu's ``Channel.conn_or_acquire`` builds a new ``redis.Redis`` object each time it is
called without a client: twice per task (recording the unacked message on delivery, and
removing it on acknowledgement). A ``redis.Redis`` copies ~250 response callbacks into a
case-insensitive dict when it is built, ~45 us each; a py-spy profile of a worker at 200 ms
latency put 15% of its GIL time there (bench/README.md). Both calls share the channel's
connection pool, so one client per channel, which is thread-safe over that pool, does the
same work.

It also records which consumer holds each unacknowledged delivery, in the same pipelines
kombu already sends for it, so that a dead worker's messages come back in seconds rather
than after the visibility timeout (workers/recovery.py). Everything else is kombu's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps

from workers import recovery

# The value of Celery's ``broker_transport`` setting that selects this transport.
TRANSPORT = "workers.broker:Transport"
# URL schemes this transport serves; any other (sentinel://, amqp://) keeps kombu's own.
SCHEMES = ("redis", "rediss")


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS; each delivery also lands in its consumer's held set.

    The set is written in the transaction that adds the delivery to ``unacked`` and
    cleaned in the pipeline that removes it (ack, reject, restore), so it costs no round
    trip; the transaction also refreshes the consumer's liveness key (recovery.record).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = recovery.new_owner()
        self._beating = False

    def append(self, message: Any, delivery_tag: str) -> None:
        # kombu's QoS.append (5.x) with the recovery records in its transaction.
        if not self._beating:
            recovery.opened(self.owner)
            self._beating = True
        delivery = message.delivery_info
        exchange, routing_key = delivery["exchange"], delivery["routing_key"]
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time.time()})
            pipe.hset(self.unacked_key, delivery_tag, dumps([message._raw, exchange, routing_key]))
            recovery.record(pipe, self.owner, delivery_tag)
            pipe.execute()
            virtual.QoS.append(self, message, delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        return recovery.unrecord(pipe, self.owner, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client: Any = None

    def _brpop_start(self, timeout: Any = None) -> Any:
        connection = self.client.connection
        if connection is not None and getattr(connection, "ibt_client_id", None) is None:
            # Once per connection: its id lets close() end a pending BRPOP at once.
            connection.send_command("CLIENT", "ID")
            connection.ibt_client_id = connection.read_response()
        return super()._brpop_start(timeout)

    def close(self) -> None:
        self._end_pending_poll()
        try:
            super().close()
        finally:
            # Celery drops what a closed channel had prefetched (after a broker restart
            # too): stop beating for it, so what it still holds is restored (recovery.py).
            if isinstance(self._qos, QoS):
                recovery.closed(self._qos.owner)

    def _end_pending_poll(self) -> None:
        """kombu's ``close`` reads the reply of the BRPOP in flight, so that a message it
        popped is not lost, and so waits up to ``brpop_timeout`` (1 s) on an idle queue: a
        second of every worker's shutdown, and of every embedded job. ``CLIENT UNBLOCK``
        (from another connection) ends that BRPOP at once exactly as its timeout would,
        popping nothing; a message it had already popped is still read and delivered by
        kombu. An id gone stale after a reconnect unblocks nothing harmful: a BRPOP so
        ended just times out early."""
        connection = self._in_poll
        client_id = getattr(connection, "ibt_client_id", None) if connection else None
        if client_id is None:
            return
        with contextlib.suppress(Exception), self.conn_or_acquire() as client:
            client.execute_command("CLIENT", "UNBLOCK", client_id)

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        # A new pool (after a reconnect or a fork) gets a new client.
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel


def use_in_worker(app: Celery) -> None:
    """Make a worker's consumer use this transport when the broker is plain Redis.

    Only workers acknowledge messages, and only they get it: a connection on a custom
    transport names it in ``as_uri()``, which Flower reads to pick its broker view. With it
    comes the heartbeat and monitor that restore a dead worker's messages (recovery.py).
    """
    scheme = str(app.conf.broker_url).split("://", 1)[0].lower()
    if scheme in SCHEMES:
        app.conf.broker_transport = TRANSPORT
        recovery.enable()
