"""Windowed submission: at most W tasks per model queued or in flight, topped up as they finish.

Queuing a whole job at once costs Valkey ~2.4 KB per task (48 GB at 2 x 10^7). A feeder reads
the job's input in order and publishes only what the window has room for. Each top-up is
one Redis transaction holding the messages *and* the new cursor, so a feeder killed at any
point has either published a chunk and moved the cursor, or neither: the next feeder goes on
at the cursor, nothing lost or sent twice. One feeder per job at a time holds a lease.

Two kinds of feeder run this code: the producer that waits for its job (reading the input
file again), and, for ``ibt score --no-wait``, the cluster itself (``ibt.feed`` on the
collect queue, reading the input the producer left in Redis: workers/input_chunks.py).

All models move together through the input (one cursor): a row's output needs every
model's verdict, so a fast model running far ahead would only pile up records in Redis.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis

from workers import cancellation, closing, jobstate
from workers.errors import IbtError
from workers.leases import Lease
from workers.models import COLLECT_QUEUE, queue_name
from workers.publish import Outgoing, envelope
from workers.records import ScoreRequest
from workers.settings import get_settings

# Pairs per transaction: big enough to amortise the round trip, small enough to keep one
# MULTI block (Valkey buffers its messages until EXEC) a few MB.
CHUNK = 500
# A feeder's lease; renewed on every poll, so a dead feeder's lapses within this.
LEASE_SECONDS = 10
# Top up once the room is at least this share of the window (fewer, larger transactions).
REFILL_SHARE = 0.25

# (row, (instruction, generation) or None for a row repeating an earlier pair, extra JSON)
FeedRow = tuple[int, tuple[str, str] | None, str | None]
# Rows from a given row on, in order.
RowSource = Callable[[int], Iterator[FeedRow]]
# Extra commands for the top-up's transaction, given the new cursor.
OnCommit = Callable[[Any, int], None]


class FeederBusy(IbtError):
    """Another live process is feeding this job."""


def feeder_key(job: str) -> str:
    return f"ibt:job:{job}:feeder"


@dataclass
class Options:
    """What every task message of the job carries besides its pair (kept in the job's
    meta, so a feeder on the cluster sends the same messages)."""

    use_cache: bool = True
    structured: bool | None = None
    budget: bool = False
    batch: bool | None = None
    keep_extra: bool = True
    # ``--samples N``: every judge is asked N times per pair (workers/sampling.py).
    samples: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | None) -> Options:
        return cls(**json.loads(raw)) if raw else cls()


class Feeder:
    """Publishes a job's tasks into its window, from the job's cursor on."""

    def __init__(
        self,
        app: Any,
        client: redis.Redis,
        job: str,
        source: RowSource,
        models: Sequence[str],
        options: Options,
        *,
        rows: int,
        unique: int,
        window: int | None,
        on_commit: OnCommit | None = None,
    ) -> None:
        self.app = app
        self.client = client
        self.job = job
        self.source = source
        self.models = list(models)
        self.options = options
        self.rows = rows
        self.unique = unique
        self.window = window
        self.on_commit = on_commit
        self.lease = Lease(client, feeder_key(job), LEASE_SECONDS)
        self.cursor = 0
        self.fed = 0
        self.finished = True  # until claim() has read where the job stands
        self._rows: Iterator[FeedRow] | None = None

    def claim(self, wait: float = 0.0) -> bool:
        """Take the job's feeder lease (waiting up to ``wait`` seconds for a dead feeder's to
        lapse), then read where the job stands: only the lease holder may trust the cursor.
        False if a live feeder holds the lease."""
        if not self.lease.claim(wait):
            return False
        meta = jobstate.read_meta(self.client, self.job) or {}
        self.cursor = int(meta.get("cursor", 0))
        self.fed = int(meta.get("fed", 0))
        self.finished = self.cursor >= self.rows or "feed_end" in meta
        self._rows = None
        return True

    def release(self) -> None:
        self.lease.release()

    def room(self, snapshot: jobstate.JobProgress | None) -> int:
        """Pairs the window has room for now (each pair is one task per model)."""
        if self.window is None:
            return self.unique
        done = min((p.done for p in snapshot.per_model.values()), default=0) if snapshot else 0
        return max(0, self.window - (self.fed - done))

    def wants(self, snapshot: jobstate.JobProgress | None) -> bool:
        """Whether a top-up now would publish (enough room, something left)."""
        if self.finished:
            return False
        if self.window is None or self.fed >= self.unique:
            return True  # (only repeated rows left: they take no room, only the cursor moves)
        return self.room(snapshot) >= min(self.window * REFILL_SHARE, self.unique - self.fed)

    def top_up(self, snapshot: jobstate.JobProgress | None = None) -> int:
        """Publish what the window has room for; returns the pairs published."""
        if self.finished:
            return 0
        self.lease.check(f"job {self.job}'s feeder")
        if cancellation.is_cancelled(self.client, self.job):
            self.stop_at_cursor()
            return 0
        if not self.wants(snapshot):
            return 0
        room = self.room(snapshot)
        published = 0
        while not self.finished and (room > 0 or self.fed >= self.unique):
            step = self._publish_chunk(max(1, min(CHUNK, room)))
            published += step
            room -= max(step, 1)
        return published

    def feed_all(self) -> None:
        """Everything at once (no window): the job's whole input goes to the queues."""
        while not self.finished:
            self._publish_chunk(CHUNK)

    def _publish_chunk(self, pairs: int) -> int:
        if self._rows is None:
            self._rows = self.source(self.cursor)
        tasks: list[Outgoing] = []
        extras: dict[str, str] = {}
        taken = 0
        cursor = self.rows
        for row, texts, extra in self._rows:
            if extra and self.options.keep_extra:
                extras[str(row)] = extra
            if texts is not None:
                taken += 1
                tasks += [self._outgoing(row, texts, model) for model in self.models]
            if taken >= pairs:
                cursor = row + 1
                break
        messages = [(task.queue, envelope(self.app, task)) for task in tasks]
        for attempt in range(3):
            try:
                with self.client.pipeline(transaction=True) as pipe:
                    # Only the lease holder publishes: a feeder that lost its lease (stalled
                    # past it) must not send what another feeder sends now.
                    self.lease.watch(pipe, f"job {self.job}'s feeder")
                    for queue, body in messages:
                        pipe.lpush(queue, body)
                    if extras:
                        pipe.hset(jobstate.extra_key(self.job), mapping=extras)
                        pipe.expire(jobstate.extra_key(self.job), get_settings().result_expires)
                        pipe.hset(jobstate.meta_key(self.job), "extra", "1")
                    mapping = {"cursor": cursor, "fed": self.fed + taken}
                    pipe.hset(jobstate.meta_key(self.job), mapping=mapping)
                    if self.on_commit is not None:
                        self.on_commit(pipe, cursor)
                    pipe.execute()
                break
            except redis.WatchError:
                # The lease key was touched: our own renewal, most likely; check and retry.
                if attempt == 2:
                    raise
        self.cursor = cursor
        self.fed += taken
        self.finished = self.cursor >= self.rows
        return taken

    def _outgoing(self, row: int, texts: tuple[str, str], model: str) -> Outgoing:
        request = ScoreRequest(
            self.job,
            row,
            model,
            texts[0],
            texts[1],
            use_cache=self.options.use_cache,
            structured=self.options.structured,
            budget=self.options.budget,
            batch=self.options.batch,
            samples=self.options.samples,
        )
        return Outgoing(request.task_id, queue_name(model), request.to_message(), request.summary())

    def stop_at_cursor(self) -> None:
        """The job was cancelled: nothing more is fed (see ``stop_feeding``)."""
        if self.on_commit is not None:
            with self.client.pipeline(transaction=True) as pipe:
                self.on_commit(pipe, self.rows)  # no chunk will be read again
                pipe.execute()
        self.finished = True
        stop_feeding(self.app, self.client, self.job)


def stop_feeding(app: Any, client: redis.Redis, job: str) -> None:
    """Close a cancelled job on what was fed: its total becomes the tasks sent, and rows
    from the cursor on whose pair was never sent read as ``cancelled`` (jobstate.read_rows).
    Idempotent; the job closes at once if every task sent has reported."""
    meta = jobstate.read_meta(client, job) or {}
    if "feed_end" not in meta:
        fed = int(meta.get("fed", 0))
        models = len(json.loads(meta.get("models", "[]")))
        mapping = {"total": fed * models, "feed_end": int(meta.get("cursor", 0))}
        client.hset(jobstate.meta_key(job), mapping=mapping)  # type: ignore[arg-type]
    if jobstate.all_reported(client, job):
        closing.send_collect(app, client, job, force=True)


def pending_key(job: str) -> str:
    """Set (NX) by the task that asks the cluster to feed ``job``; cleared by the feed."""
    return f"ibt:job:{job}:feed-pending"


def feed_on_cluster(app: Any, client: redis.Redis, job: str) -> int:
    """``ibt.feed``: top a ``--no-wait`` job's window up from its input in Redis.

    Runs while the window has room, clearing the pending flag, then looks once more after
    releasing its lease, so a completion that came meanwhile is not lost.
    """
    from workers import input_chunks

    meta = jobstate.read_meta(client, job) or {}
    if meta.get("feed") != "cluster":
        return 0
    url = str(app.conf.result_backend)
    rows = int(meta.get("pairs", 0))
    feeder = Feeder(
        app,
        client,
        job,
        lambda start: input_chunks.read_from(url, job, start, rows),
        json.loads(meta.get("models", "[]")),
        Options.from_json(meta.get("options")),
        rows=rows,
        unique=int(meta.get("unique", 0)),
        window=int(meta.get("window", 0)) or None,
    )
    try:
        if not feeder.claim():
            return 0  # the holder feeds; the flag is cleared below so the next one can ask
        # Chunks before the cursor the lease holder read are gone or going with its top-ups.
        feeder.on_commit = input_chunks.dropper(job, feeder.cursor, rows)
        published = 0
        try:
            while True:
                published += feeder.top_up(jobstate.progress(client, job))
                client.delete(pending_key(job))
                if feeder.finished or not feeder.wants(jobstate.progress(client, job)):
                    break
        finally:
            feeder.release()
    finally:
        client.delete(pending_key(job))
    # Completions that came while this held the lease found the flag taken, or their feed
    # task found the lease taken: look once more now that both are free.
    if (
        not feeder.finished
        and feeder.wants(jobstate.progress(client, job))
        and client.set(pending_key(job), "1", nx=True, ex=30)
    ):
        ask_cluster_to_feed(app, job)
    return published


def ask_cluster_to_feed(app: Any, job: str) -> None:
    app.send_task("ibt.feed", kwargs={"job": job}, queue=COLLECT_QUEUE, argsrepr=f"job={job}")
