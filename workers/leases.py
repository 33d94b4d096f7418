"""A lease on a job-wide role (its feeder, its output writer): one live holder at a time.

The holder renews it from a thread of its own, so a holder that is merely slow (a writer
blocked on a slow ``| less``) keeps it, while a dead one's lapses within ``seconds``. Work
that must only happen under the lease checks it inside its own transaction (``watch``).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import redis

from workers.errors import IbtError


class LeaseLost(IbtError):
    """Another process holds (or took over) the lease."""


class Lease:
    def __init__(self, client: redis.Redis, key: str, seconds: float) -> None:
        self.client = client
        self.key = key
        self.seconds = seconds
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def claim(self, wait: float = 0.0) -> bool:
        """Take the lease, waiting up to ``wait`` seconds for a dead holder's to lapse;
        False if a live holder keeps it."""
        deadline = time.monotonic() + wait
        ms = int(self.seconds * 1000)
        while not self.client.set(self.key, self.token, nx=True, px=ms):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, daemon=True, name="ibt-lease")
        self._renewer.start()
        return True

    def _renew(self) -> None:
        every = self.seconds / 3
        while not self._stop.wait(every):
            try:
                if self.client.get(self.key) != self.token:
                    return  # lost: whoever checks ``held`` or ``watch`` will find out
                self.client.pexpire(self.key, int(self.seconds * 1000))
            except redis.RedisError:
                continue  # the broker may be restarting; the next beat tries again

    @property
    def held(self) -> bool:
        return bool(self.client.get(self.key) == self.token)

    def check(self, what: str) -> None:
        if not self.held:
            raise LeaseLost(f"{what}: another process holds the lease")

    def watch(self, pipe: Any, what: str) -> None:
        """On a transaction pipeline: WATCH the lease and check it is ours, then MULTI; the
        EXEC then fails (WatchError) if the lease changed hands meanwhile."""
        pipe.watch(self.key)
        if pipe.get(self.key) != self.token:
            pipe.reset()
            raise LeaseLost(f"{what}: another process holds the lease")
        pipe.multi()

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=1)
        try:
            if self.client.get(self.key) == self.token:
                self.client.delete(self.key)
        except redis.RedisError:
            pass  # it lapses by itself
