"""kombu's Redis transport, minus a client construction on every acknowledgement.

kombu's ``Channel.conn_or_acquire`` builds a new ``redis.Redis`` object each time it is
called without a client: twice per task (recording the unacked message on delivery, and
removing it on acknowledgement). A ``redis.Redis`` copies ~250 response callbacks into a
case-insensitive dict when it is built, ~45 us each; a py-spy profile of a worker at 200 ms
latency put 15% of its GIL time there (bench/README.md). Both calls share the channel's
connection pool, so one client per channel, which is thread-safe over that pool, does the
same work. Everything else is kombu's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu.transport import redis as kombu_redis

# The value of Celery's ``broker_transport`` setting that selects this transport.
TRANSPORT = "workers.broker:Transport"
# URL schemes this transport serves; any other (sentinel://, amqp://) keeps kombu's own.
SCHEMES = ("redis", "rediss")


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

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
    transport names it in ``as_uri()``, which Flower reads to pick its broker view.
    """
    scheme = str(app.conf.broker_url).split("://", 1)[0].lower()
    if scheme in SCHEMES:
        app.conf.broker_transport = TRANSPORT
