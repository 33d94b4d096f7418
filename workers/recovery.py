"""A dead worker's in-flight messages back on their queues in seconds, not a visibility timeout.

kombu's Redis transport keeps every delivered, unacknowledged message in the ``unacked``
hash and puts it back only once it is older than the visibility timeout (600 s here, and it
must stay long: a retry waits unacknowledged for its countdown). A worker killed mid-job
therefore stalled the tail of the job for up to ten minutes. kombu cannot tell a dead
holder from a slow one; this module tells it.

Each consuming channel of a worker process (its *owner*: node name, pid, a random token and
a channel number, so a restarted worker with the same node name is never taken for its dead
predecessor) records in Redis

* ``ibt:held:<owner>``: the delivery tags it holds (a set), written in the very script
  that adds a delivery to kombu's ``unacked`` and the one that removes it on ack or reject
  (workers/broker.py ``QoS``, lua/held_append.lua and lua/held_remove.lua), so it costs
  no round trip;
* ``ibt:alive:<owner>``: a key that lapses ``HEARTBEAT_TTL`` seconds after the last beat;
  a thread beats every ``BEAT_SECONDS``, and every delivery beats too, in the same
  script that records it (so a consumer that resumes after a stall is alive again
  before it holds anything new);
* ``ibt:recovery:owners``: the registry of owners, so nobody scans the keyspace.

Every worker also runs a monitor (every ``SWEEP_SECONDS``) that looks for owners whose
liveness key is gone and puts exactly their held messages back at the head of their queues,
as kombu's ``restore_by_tag`` would (marked redelivered, out of ``unacked`` and
``unacked_index``). Each message goes back through one Lua script
(``lua/recovery_restore.lua``) that re-checks the owner's liveness and takes the message out
of ``unacked`` with HDEL: of two racing monitors, or a monitor and a late ack, exactly one
wins. Tags no longer in ``unacked`` (acknowledged) are dropped. Messages merely waiting in a
queue are never delivered, so never held, so never touched; and a message whose owner never
recorded it (a worker on kombu's plain transport) still comes back after the visibility
timeout, which stays the last resort. Redis errors are logged and the work is done again on
the next tick. The monitor trusts no missing key while the broker has been up for less than
one TTL: after a broker restart longer than a TTL every key looks expired until its owner
beats again.

A channel closed while the process goes on (the consumer reconnecting after a broker
restart) is an owner that no longer beats: kombu meant to restore its unacknowledged
messages when it closed, which fails while the broker is down, and Celery has forgotten the
prefetched and scheduled ones by then, so the monitors restore them once its key lapses.

Repeated paid calls. A worker SIGKILLed mid-call loses the calls it had in flight; each is
paid again once when its message runs elsewhere (at most its concurrency). A worker that is
stalled (SIGSTOP) longer than a TTL and then resumes is the worst case: everything it held
unacknowledged is run elsewhere while it still has its own copies, which it runs when it
resumes. A copy that starts after the other finished finds the verdict cached and pays
nothing; two copies of one task running at the same time share the task id, which is also
their claim owner (workers/cache.py), so both may pay. So at most one extra paid call per
message the owner held when its key lapsed: Celery's prefetch count, which is concurrency x
``worker_prefetch_multiplier`` (= concurrency here, running or waiting in the worker), plus
the countdown retries it was holding (Celery raises the prefetch by one for each). A task
whose acknowledgement had not reached Redis (a score task sends it with its record, after
it; others go in groups, at most one round trip behind: workers/broker.py) is among those
held; run again, it finds its verdict cached (unless the job runs with ``--no-cache``) and
pays nothing. Records are
first-report-wins (lua/record_outcome.lua), so each row is still reported exactly once.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, worker_ready, worker_shutdown
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from workers.jobstate import script_text

# An owner whose key is this old is dead (five beats missed, or a stall that long).
HEARTBEAT_TTL = 10
BEAT_SECONDS = 2.0
# How often each worker looks for dead owners: a dead worker's messages are back on their
# queues at most HEARTBEAT_TTL + SWEEP_SECONDS after its last beat.
SWEEP_SECONDS = 2.0

REGISTRY = "ibt:recovery:owners"
ALIVE_PREFIX = "ibt:alive:"
HELD_PREFIX = "ibt:held:"

log = logging.getLogger("ibt.recovery")


def alive_key(owner: str) -> str:
    return ALIVE_PREFIX + owner


def held_key(owner: str) -> str:
    return HELD_PREFIX + owner


# --- owners: one per consuming channel of this process --------------------------------------

_lock = threading.Lock()
_live: set[str] = set()
_serial = itertools.count(1)
_process: tuple[int, str] | None = None
_node: str | None = None
_enabled = False


def _process_id() -> str:
    """Node name, pid and a random token: unique per process, also across restarts."""
    global _process
    pid = os.getpid()
    if _process is None or _process[0] != pid:  # a forked child is another process
        node = _node or socket.gethostname()
        _process = (pid, f"{node}:{pid}:{secrets.token_hex(3)}")
    return _process[1]


def new_owner() -> str:
    """An id for one consuming channel (its QoS) of this process."""
    with _lock:
        return f"{_process_id()}:{next(_serial)}"


def opened(owner: str) -> None:
    """``owner`` holds deliveries now: the heartbeat thread beats for it."""
    with _lock:
        _live.add(owner)


def closed(owner: str) -> None:
    """``owner``'s channel is closed: no more beats, whatever it still holds goes back."""
    with _lock:
        _live.discard(owner)


def live_owners() -> list[str]:
    with _lock:
        return sorted(_live)


def unrecord(pipe: Any, owner: str, tag: str) -> Any:
    """Queue, on kombu's restore pipeline, that ``owner`` no longer holds ``tag``."""
    return pipe.srem(held_key(owner), tag)


def beat(client: Any, owners: Collection[str], ttl: float = HEARTBEAT_TTL) -> None:
    """One heartbeat for each of ``owners`` (one round trip; nothing to do without owners)."""
    if not owners:
        return
    with client.pipeline(transaction=False) as pipe:
        for owner in owners:
            pipe.set(alive_key(owner), 1, ex=max(1, int(ttl)))
            pipe.sadd(REGISTRY, owner)
        pipe.execute()


# --- the monitor ------------------------------------------------------------------------------


@dataclass
class Sweep:
    """What one pass of the monitor did."""

    restored: int = 0
    dropped: int = 0
    # Owners found dead holding something, and dead owners holding nothing (forgotten).
    dead: tuple[str, ...] = ()
    forgotten: int = 0
    # True when the broker was too young to trust a missing key, so nothing was looked at.
    waited: bool = False


def _targets(
    channel: Any,
    payload: dict[str, Any],
    exchange: str,
    routing_key: str,
    bindings: dict[tuple[str, str], list[str]],
) -> list[str]:
    """The lists kombu's ``_do_restore_message`` would push ``payload`` to.

    ``bindings`` caches kombu's lookup (a read of the exchange's binding table) per sweep.
    """
    route = (exchange, routing_key)
    if route not in bindings:
        bindings[route] = list(channel._lookup(exchange, routing_key))
    priority = channel._get_message_priority(payload, reverse=False)
    return [channel._q_for_pri(queue, priority) for queue in bindings[route]]


def _redelivered(payload: dict[str, Any]) -> str:
    """The message as kombu restores it: marked redelivered (Celery reports it so)."""
    try:
        payload["headers"]["redelivered"] = True
        payload["properties"]["delivery_info"]["redelivered"] = True
    except (KeyError, TypeError):
        pass
    return str(dumps(payload))


def sweep(
    channel: Any,
    *,
    skip: Collection[str] = (),
    ttl: float = HEARTBEAT_TTL,
    min_uptime: float | None = None,
) -> Sweep:
    """Put the held messages of every dead owner back on their queues (see the module doc).

    ``channel`` is a kombu Redis channel: its client, its ``unacked`` keys, its exchange
    bindings. ``skip`` are owners known alive (this process's). Nothing is trusted while the
    broker has been up for less than ``min_uptime`` (default: one TTL). Four round trips
    however many owners and messages (plus one per exchange of a restored message); safe to
    run in any number of processes at once.
    """
    min_uptime = ttl if min_uptime is None else min_uptime
    with channel.conn_or_acquire() as client:
        dead = _dead_owners(client, skip, min_uptime)
        if dead is None:
            return Sweep(waited=True)
        holding = [(owner, tags) for owner, tags in dead if tags]
        result = Sweep(dead=tuple(owner for owner, _ in holding))
        if not dead:
            return result
        with client.pipeline(transaction=False) as pipe:
            for owner, tags in dead:
                if not tags:
                    keys = [alive_key(owner), held_key(owner), REGISTRY]
                    pipe.eval(script_text("recovery_forget"), len(keys), *keys, owner)
            for _, tags in holding:
                pipe.hmget(channel.unacked_key, tags)
            replies = pipe.execute()
        forgets = len(dead) - len(holding)
        result.forgotten = sum(int(n) for n in replies[:forgets])
        if holding:
            for owner, outcomes in _restore(channel, client, holding, replies[forgets:]).items():
                restored = outcomes.count(1)
                result.restored += restored
                result.dropped += outcomes.count(0)
                if restored:
                    log.warning(
                        "put %d unacknowledged message(s) of %s back on their queues: "
                        "no heartbeat for over %ss",
                        restored,
                        owner,
                        ttl,
                    )
        return result


def _dead_owners(
    client: Any, skip: Collection[str], min_uptime: float
) -> list[tuple[str, list[bytes]]] | None:
    """Each registered owner without a liveness key, with the tags it holds; None while the
    broker is too young to tell (two round trips)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.smembers(REGISTRY)
        pipe.info("server")
        members, info = pipe.execute(raise_on_error=False)
    if isinstance(members, Exception):
        raise members
    uptime = info.get("uptime_in_seconds") if isinstance(info, dict) else None
    if uptime is not None and float(uptime) < min_uptime:
        return None
    owners = sorted({bytes_to_str(m) for m in members} - set(skip))
    if not owners:
        return []
    with client.pipeline(transaction=False) as pipe:
        for owner in owners:
            pipe.exists(alive_key(owner))
            pipe.smembers(held_key(owner))
        replies = pipe.execute()
    return [
        (owner, sorted(tags))
        for owner, alive, tags in zip(owners, replies[::2], replies[1::2], strict=True)
        if not alive
    ]


def _restore(
    channel: Any,
    client: Any,
    holding: list[tuple[str, list[bytes]]],
    payloads: list[list[bytes | None]],
) -> dict[str, list[int]]:
    """Run recovery_restore.lua for every held tag (one round trip); its outcomes per owner.

    ``payloads`` are the tags' ``unacked`` entries (None: already acknowledged).
    """
    restore = script_text("recovery_restore")
    unacked = [channel.unacked_key, channel.unacked_index_key]
    bindings: dict[tuple[str, str], list[str]] = {}
    owners: list[str] = []
    with client.pipeline(transaction=False) as pipe:
        for (owner, tags), raws in zip(holding, payloads, strict=True):
            for tag, raw in zip(tags, raws, strict=True):
                body, queues = "", []
                if raw is not None:
                    try:
                        payload, exchange, routing_key = loads(bytes_to_str(raw))
                        queues = _targets(channel, payload, exchange, routing_key, bindings)
                        body = _redelivered(payload)
                    except (ValueError, TypeError, AttributeError):
                        queues = []
                    if not queues:
                        # Only taken off the held set: kombu's visibility sweep still has it.
                        log.warning(
                            "a message of %s has no queue to go back to; it waits for the "
                            "visibility timeout",
                            owner,
                        )
                keys = [alive_key(owner), held_key(owner), *unacked, *queues]
                pipe.eval(restore, len(keys), *keys, tag, body)
                owners.append(owner)
        replies = pipe.execute()
    outcomes: dict[str, list[int]] = {}
    for owner, reply in zip(owners, replies, strict=True):
        outcomes.setdefault(owner, []).append(int(reply))
    return outcomes


# --- the threads of one worker ----------------------------------------------------------------


class Recovery:
    """The heartbeat and monitor threads of one worker process, on their own broker channel."""

    def __init__(
        self,
        app: Celery,
        *,
        beat_every: float = BEAT_SECONDS,
        sweep_every: float = SWEEP_SECONDS,
    ) -> None:
        self.app = app
        self.beat_every = beat_every
        self.sweep_every = sweep_every
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._channel_lock = threading.Lock()
        self._connection: Any = None
        self._chan: Any = None

    def channel(self) -> Any:
        """A channel of the worker's transport, opened on first use (one connect attempt)."""
        with self._channel_lock:
            if self._chan is None:
                connection = self.app.connection_for_write()
                try:
                    self._chan = connection.channel()
                except Exception:
                    connection.release()
                    raise
                self._connection = connection
            return self._chan

    def beat_once(self) -> None:
        with self.channel().conn_or_acquire() as client:
            beat(client, live_owners())

    def sweep_once(self) -> Sweep:
        return sweep(self.channel(), skip=live_owners())

    def start(self) -> None:
        self._stop.clear()
        for name, every, work in (
            ("ibt-recovery-beat", self.beat_every, self.beat_once),
            ("ibt-recovery-sweep", self.sweep_every, self.sweep_once),
        ):
            thread = threading.Thread(
                target=self._run, args=(name, every, work), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop both threads; the liveness keys lapse within a TTL (whatever this process still
        holds then is restored by the others, like a dead worker's)."""
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        self._threads.clear()
        with self._channel_lock:
            if self._connection is not None:
                try:
                    self._connection.release()
                except Exception:  # closing a connection to a broker that is gone
                    log.debug("closing the recovery connection failed", exc_info=True)
            self._connection = self._chan = None

    def _run(self, name: str, every: float, work: Callable[[], object]) -> None:
        while not self._stop.is_set():
            try:
                work()
            except Exception as exc:  # the broker may be restarting: try again next tick
                log.warning("%s failed, retrying in %.0fs: %r", name, every, exc)
            self._stop.wait(every)


_running: Recovery | None = None


def enable() -> None:
    """Run the heartbeat and monitor in this worker (``broker.use_in_worker`` calls it)."""
    global _enabled
    _enabled = True


@celeryd_init.connect
def _name_process(sender: Any = None, **_: Any) -> None:
    """Owners of this process carry the worker's node name (set before it consumes)."""
    global _node, _process
    if _enabled and sender:
        _node = str(sender)
        _process = None


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    global _running
    if not _enabled or sender is None or _running is not None:
        return
    _running = Recovery(sender.app)
    _running.start()


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    global _running
    if _running is not None:
        _running.stop()
        _running = None
