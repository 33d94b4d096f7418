"""kombu's Redis transport, with fewer round trips per task and no lost deliveries.

kombu's ``Channel.conn_or_acquire`` builds a new ``redis.Redis`` object each time it is
called without a client: twice per task (recording the unacked message on delivery, and
removing it on acknowledgement). A ``redis.Redis`` copies ~250 response callbacks into a
case-insensitive dict when it is built, ~45 us each; a py-spy profile of a worker at 200 ms
latency put 15% of its GIL time there (bench/README.md). Both calls share the channel's
connection pool, so one client per channel, which is thread-safe over that pool, does the
same work.

It also records which consumer holds each unacknowledged delivery, in the same command
that records the delivery for kombu, so that a dead worker's messages come back in seconds
rather than after the visibility timeout (workers/recovery.py). And a message's delivery
bookkeeping costs at most one command where kombu's costs three (BRPOP, the unacked
transaction, the ack transaction): a consumer takes its backlog with a script that pops
and records in one step (``Channel.take_queued``), and a score task removes its delivery's
records in its own end-of-task round trip (``acknowledge_in``); other acknowledgements are
sent in groups (``QoS._forget``). Everything else is kombu's.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.commands.core import Script

from workers import recovery
from workers.jobstate import queue_script, script_text

# The value of Celery's ``broker_transport`` setting that selects this transport.
TRANSPORT = "workers.broker:Transport"
# The most messages one take_queued command moves (the prefetch bounds it first).
TAKE_AT_ONCE = 100
# Lua's unpack() takes a few thousand values; a group larger than this goes in several.
ACKS_PER_COMMAND = 500
# URL schemes this transport serves; any other (sentinel://, amqp://) keeps kombu's own.
SCHEMES = ("redis", "rediss")


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS; each delivery also lands in its consumer's held set.

    kombu records a delivery with a MULTI of ZADD + HSET and forgets it with a MULTI of
    ZREM + HDEL; with our held set and liveness key that made seven and five commands for
    redis-py to pack and parse, per task, in the consumer's event loop. One Lua script each
    (``lua/held_append.lua``, ``lua/held_remove.lua``) does the same writes atomically, as
    the transactions did, in one command. The delivery also refreshes the consumer's
    liveness key (workers/recovery.py).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = recovery.new_owner()
        self._beating = False
        self._acks_lock = threading.Lock()
        self._pending_acks: list[str] = []
        self._acks_sender = False
        # Deliveries already recorded by Channel.take_queued, about to reach append.
        self._taken: set[str] = set()
        # Deliveries whose task removed their records itself (acknowledge_in), and the
        # task id of each delivery held.
        self._settled: set[str] = set()
        self._task_of: dict[str, str] = {}

    def _beat(self) -> None:
        if not self._beating:
            recovery.opened(self.owner)
            self._beating = True

    def append(self, message: Any, delivery_tag: str) -> None:
        self._beat()
        task_id = (message.headers or {}).get("id")
        if task_id:
            self._task_of[delivery_tag] = task_id
            _held_by_task[task_id] = (self, delivery_tag)
        if delivery_tag in self._taken:
            # Taken by lua/take_queued.lua, which recorded it in the same step.
            self._taken.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
            return
        delivery = message.delivery_info
        stored = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        keys = self.delivery_keys()
        args = [delivery_tag, time.time(), stored, recovery.HEARTBEAT_TTL, self.owner]
        with self.channel.conn_or_acquire() as client:
            _script("held_append", client)(keys=keys, args=args, client=client)
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        if not self._release(delivery_tag):
            self._forget(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        settled = self._release(delivery_tag)
        if requeue:
            self.restore_by_tag(delivery_tag, leftmost=True)
        elif not settled:
            self._forget(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def _release(self, delivery_tag: str) -> bool:
        """Forget which task held ``delivery_tag``; whether its task already removed its
        records (``acknowledge_in``)."""
        task_id = self._task_of.pop(delivery_tag, None)
        if task_id is not None and _held_by_task.get(task_id, (None, None))[1] == delivery_tag:
            _held_by_task.pop(task_id, None)
        if delivery_tag in self._settled:
            self._settled.discard(delivery_tag)
            return True
        return False

    def _forget(self, delivery_tag: str) -> None:
        """Remove an acknowledged delivery's records, committed in groups.

        Tasks finish on many threads. The first to acknowledge sends its tag at once; any
        that acknowledge while that command is under way leave their tags for the sender,
        which sends them all in its next command, until none are left. An idle worker
        sends each alone, as kombu does; a busy one one command per group, with no timer.
        A record not yet sent when the process dies is a message it still holds, restored
        and run again like one in flight (workers/recovery.py states the bound); the channel
        sends what is left when it closes. A failed send keeps its tags for the next one
        (removing a record twice is harmless), and raises as kombu's ack would.
        """
        with self._acks_lock:
            self._pending_acks.append(delivery_tag)
            if self._acks_sender:
                return
            self._acks_sender = True
        self._send_pending_acks()

    def _send_pending_acks(self) -> None:
        tags: list[str] = []
        try:
            while True:
                with self._acks_lock:
                    tags, self._pending_acks = self._pending_acks, []
                    if not tags:
                        self._acks_sender = False
                        return
                keys = self.held_keys()
                with self.channel.conn_or_acquire() as client:
                    forget = _script("held_remove", client)
                    for start in range(0, len(tags), ACKS_PER_COMMAND):
                        chunk = tags[start : start + ACKS_PER_COMMAND]
                        forget(keys=keys, args=chunk, client=client)
                tags = []
        except BaseException:
            with self._acks_lock:
                self._pending_acks[:0] = tags
                self._acks_sender = False
            raise

    def flush_acks(self) -> None:
        """Send acknowledgements left pending (a channel closing)."""
        with self._acks_lock:
            if self._acks_sender or not self._pending_acks:
                return
            self._acks_sender = True
        self._send_pending_acks()

    def held_keys(self) -> list[str]:
        """The keys a delivery's records live in (KEYS[1..3] of every held_*.lua script):
        kombu's unacked index and hash, and this consumer's held set."""
        return [self.unacked_index_key, self.unacked_key, recovery.held_key(self.owner)]

    def delivery_keys(self) -> list[str]:
        """``held_keys`` and what a delivery also refreshes: the liveness key, the registry."""
        return [*self.held_keys(), recovery.alive_key(self.owner), recovery.REGISTRY]

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        # kombu's restore_by_tag (a worker restoring what it held at shutdown) goes here.
        pipe = super()._remove_from_indices(delivery_tag, pipe)
        return recovery.unrecord(pipe, self.owner, delivery_tag)


# The delivery each task running in this process came from, by task id (QoS.append).
_held_by_task: dict[str, tuple[QoS, str]] = {}


def acknowledge_in(pipe: Any, task_id: str | None) -> Callable[[], None] | None:
    """Queue on ``pipe`` (a task's end-of-task writes) the removal of the task's delivery
    records, so its acknowledgement costs no round trip of its own; what to call once
    ``pipe`` has run (Celery's acknowledgement then only updates the consumer's counts).
    None when this process holds no such delivery (eager runs, kombu's own transport).

    Queue it last: a worker that dies while sending the pipeline leaves a prefix of it run,
    so the record may be written and the message still held (run again: its verdict is
    cached), never the message acknowledged without its record.
    """
    held = _held_by_task.get(task_id or "")
    if held is None:
        return None
    qos, tag = held
    keys = qos.held_keys()
    queue_script(pipe, "held_remove", keys, [tag])
    return lambda: qos._settled.add(tag)


_scripts: dict[str, Script] = {}


def _script(name: str, client: Any) -> Script:
    """redis-py's Script for ``lua/<name>.lua``: EVALSHA, loading the script when the server
    does not know it (a broker restarted since)."""
    script = _scripts.get(name)
    if script is None:
        script = _scripts[name] = Script(client, script_text(name))
    return script


class Channel(kombu_redis.Channel):
    QoS = QoS
    _shared_client: Any = None

    # Whether the queues were found empty by the last take (then BRPOP waits for the next
    # message, and no take is tried until one arrives).
    _drained = False

    def _brpop_start(self, timeout: Any = None) -> Any:
        if not self._drained and self.take_queued() and not self.qos.can_consume():
            return None  # prefetch full: polled again once a task frees a slot
        connection = self.client.connection
        if connection is not None and getattr(connection, "ibt_client_id", None) is None:
            # Once per connection: its id lets close() end a pending BRPOP at once.
            connection.send_command("CLIENT", "ID")
            connection.ibt_client_id = connection.read_response()
        return super()._brpop_start(timeout)

    def take_queued(self) -> int:
        """Deliver what is already queued, up to the free prefetch, in one command that also
        records each message as held (lua/take_queued.lua); how many were delivered.

        kombu's consumer pops one message per BRPOP and records it in ``unacked`` with a
        second round trip: a worker killed between the two loses that message (it is in no
        queue and in no ``unacked``, so neither the visibility timeout nor the recovery
        monitors bring it back). Before each BRPOP the consumer now takes the backlog this
        way, so only a message arriving at an idle worker still goes through BRPOP. One
        command per take instead of two per message is also less CPU. A take that finds
        the queues empty is not tried again until BRPOP delivers something.
        """
        qos = self.qos
        if (
            not getattr(self.connection, "in_event_loop", False)
            or self.global_keyprefix
            or not isinstance(qos, QoS)
            or not self.active_queues
        ):
            return 0
        room = qos.can_consume_max_estimate()
        room = TAKE_AT_ONCE if room is None else min(int(room), TAKE_AT_ONCE)
        if room <= 0:
            return 0
        queues = self._queue_cycle.consume(len(self.active_queues))
        lists = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        keys = [*qos.delivery_keys(), *lists]
        args: list[str | int | float] = [room, time.time(), recovery.HEARTBEAT_TTL, qos.owner]
        qos._beat()
        with self.conn_or_acquire() as client:
            taken = _script("take_queued", client)(keys=keys, args=args, client=client)
        self._drained = len(taken) // 2 < room
        for dest, raw in zip(taken[::2], taken[1::2], strict=True):
            payload = loads(bytes_to_str(raw))
            with contextlib.suppress(KeyError, TypeError):
                qos._taken.add(payload["properties"]["delivery_tag"])
            self.connection._deliver(payload, bytes_to_str(dest).rsplit(self.sep, 1)[0])
        return len(taken) // 2

    def _brpop_read(self, **options: Any) -> Any:
        delivered = super()._brpop_read(**options)
        self._drained = False  # a message arrived: more may be queued behind it
        return delivered

    def close(self) -> None:
        self._end_pending_poll()
        if isinstance(self._qos, QoS):
            with contextlib.suppress(Exception):  # the broker may be gone: restored later
                self._qos.flush_acks()
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
    # Set once a worker's event loop drives this transport (Celery's asynloop): only there
    # does a delivery made before BRPOP reach the consumer. ``drain_events`` (kombu's
    # blocking get) reports only what BRPOP returns, so there the channel does not take.
    in_event_loop = False

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        self.in_event_loop = True
        super().register_with_event_loop(connection, loop)


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
