"""Claims on a verdict in flight: short leases that the holding worker process keeps renewing.

A claim (``ibt:claim:<key>``, see cache.py) stops a second task from paying for a call that
is already under way. It is taken for ``LEASE_SECONDS`` only, and one thread per worker
process renews every claim the process holds, all in one round trip every
``RENEW_SECONDS``, until the task settles. A claim left by a process that died therefore
lapses within seconds, so a re-run does not wait out a whole call timeout for it, while a
slow live call keeps its claim as long as it runs (up to the longest hold its task asked for).
"""

from __future__ import annotations

import logging
import math
import threading
import time

import redis

from workers.jobstate import queue_script

# Three renewals fit in one lease, so a late or failed renewal does not drop a live claim.
LEASE_SECONDS = 6
RENEW_SECONDS = 2.0
# Claims per EVAL in a renewal round (all rounds' EVALs go in one pipeline).
RENEW_BATCH = 500

log = logging.getLogger("ibt.worker")


def max_waits(hold_for: float, every: float) -> int:
    """How many times a task re-checks a claim another task holds before going ahead anyway.

    A claim is renewed for at most ``hold_for`` seconds and then lapses within one lease,
    so waiting longer than that can only mean its holder's call is stuck beyond its timeout.
    """
    return math.ceil((hold_for + LEASE_SECONDS) / every) + 1


class Leases:
    """The claims this process holds on one server, and the thread that renews them.

    Thread-safe: tasks on the worker's threads ``hold`` and ``release``; the renewal thread
    starts on the first ``hold``, so creating (or importing) this has no side effect.
    """

    def __init__(
        self, client: redis.Redis, *, lease: float = LEASE_SECONDS, every: float = RENEW_SECONDS
    ) -> None:
        self.client = client
        self.lease = lease
        self.every = every
        # (claim key, owner) → monotonic time after which it is no longer renewed.
        self._held: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, claim: str, owner: str, hold_for: float) -> None:
        """Keep ``owner``'s claim alive for up to ``hold_for`` seconds, or until released.

        The bound keeps a task that never settles (a bug, a lost connection at the end)
        from holding its claim forever.
        """
        with self._lock:
            self._held[(claim, owner)] = time.monotonic() + hold_for
            # is_alive() is also False in a child forked after the thread was started.
            if not self._stopped.is_set() and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(
                    target=self._run, name="ibt-claim-renewal", daemon=True
                )
                self._thread.start()

    def release(self, claim: str, owner: str) -> None:
        """Stop renewing a claim (its key is deleted by the caller, see cache.settle)."""
        with self._lock:
            self._held.pop((claim, owner), None)

    def held(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._held)

    def renew(self) -> int:
        """Extend every held claim by one lease, in one round trip; returns how many were.

        Claims past their longest hold, or found lapsed or taken by another owner, are
        forgotten.
        """
        now = time.monotonic()
        with self._lock:
            for item, until in list(self._held.items()):
                if until <= now:
                    del self._held[item]
            snapshot = dict(self._held)
        if not snapshot:
            return 0
        items = list(snapshot)
        lease_ms = max(1, int(self.lease * 1000))
        with self.client.pipeline(transaction=False) as pipe:
            for start in range(0, len(items), RENEW_BATCH):
                batch = items[start : start + RENEW_BATCH]
                keys = [claim for claim, _ in batch]
                queue_script(pipe, "renew_claims", keys, [lease_ms, *(o for _, o in batch)])
            replies = pipe.execute()
        flags = [int(flag) for reply in replies for flag in reply]
        lost = [item for item, ok in zip(items, flags, strict=True) if not ok]
        if lost:
            with self._lock:
                for item in lost:
                    # Unless it was taken again meanwhile (a redelivery of the same task).
                    if self._held.get(item) == snapshot[item]:
                        del self._held[item]
        return len(items) - len(lost)

    def stop(self) -> None:
        """Stop renewing for good (what a process that dies does); held claims then lapse."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.every + 5)

    def _run(self) -> None:
        while not self._stopped.wait(self.every):
            try:
                self.renew()
            except Exception:  # the thread must outlive a broker restart or a bad reply
                log.warning("renewing claims failed; retrying in %.1fs", self.every, exc_info=True)


_leases: dict[int, Leases] = {}
_leases_lock = threading.Lock()


def leases(client: redis.Redis) -> Leases:
    """This process's leases on ``client`` (a worker has one client, so one renewal thread)."""
    found = _leases.get(id(client))
    if found is None:
        with _leases_lock:
            # Leases keeps a reference to its client, so the id is not reused while listed.
            found = _leases.setdefault(id(client), Leases(client))
    return found
