"""Which model queues have a live worker: a heartbeat per worker in Redis.

With a Redis broker nothing records who consumes a list, and Celery's broadcast ``inspect``
costs a second of waiting per question. So each worker, once ready, writes
``ibt:consumers:<queue>`` (a sorted set: node name → last beat, unix seconds) every
``BEAT_SECONDS`` for each queue it serves; a producer or ``ibt status`` counts the nodes
seen within ``FRESH_SECONDS``, one cheap read, and can warn that nobody serves a model.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutdown

PREFIX = "ibt:consumers:"
BEAT_SECONDS = 5.0
# A node not heard from for this long is gone (three beats missed).
FRESH_SECONDS = 3 * BEAT_SECONDS
log = logging.getLogger("ibt.presence")
_stop = threading.Event()
_served: dict[str, Any] = {}


def consumers_key(queue: str) -> str:
    return PREFIX + queue


def live_consumers(client: redis.Redis, queue: str, *, now: float | None = None) -> int:
    """How many worker nodes beat for ``queue`` within the last FRESH_SECONDS."""
    now = time.time() if now is None else now
    return int(client.zcount(consumers_key(queue), now - FRESH_SECONDS, "+inf"))  # type: ignore[arg-type]


def beat(client: redis.Redis, node: str, queues: list[str], *, now: float | None = None) -> None:
    """One heartbeat of ``node`` for each of ``queues`` (one round trip)."""
    now = time.time() if now is None else now
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zadd(consumers_key(queue), {node: now})
            pipe.zremrangebyscore(consumers_key(queue), "-inf", now - 10 * FRESH_SECONDS)
            pipe.expire(consumers_key(queue), int(10 * FRESH_SECONDS))
        pipe.execute()


def leave(client: redis.Redis, node: str, queues: list[str]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zrem(consumers_key(queue), node)
        pipe.execute()


def _beat_forever(url: str, node: str, queues: list[str]) -> None:
    from workers.jobstate import client_for_url

    client = client_for_url(url)
    while not _stop.is_set():
        try:
            beat(client, node, queues)
        except redis.exceptions.RedisError as exc:  # the broker may be restarting
            log.warning("presence heartbeat failed: %s", exc)
        _stop.wait(BEAT_SECONDS)


@worker_ready.connect
def _start_beating(sender: Any = None, **_: Any) -> None:
    """Once the worker consumes, announce its queues until it shuts down."""
    if sender is None:
        return
    queues = [queue.name for queue in sender.task_consumer.queues]
    url = sender.app.conf.result_backend
    _served.update(url=url, node=sender.hostname, queues=queues)
    _stop.clear()
    thread = threading.Thread(
        target=_beat_forever, args=(url, sender.hostname, queues), name="ibt-presence", daemon=True
    )
    thread.start()


@worker_shutdown.connect
def _stop_beating(**_: Any) -> None:
    _stop.set()
    if _served:
        with contextlib.suppress(redis.exceptions.RedisError):
            client = redis.Redis.from_url(
                _served["url"], socket_timeout=2, socket_connect_timeout=2
            )
            leave(client, _served["node"], _served["queues"])
