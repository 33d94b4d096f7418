"""Submit a job as one chord, follow its progress from our own counters, fetch its result."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from producer.checks import check_budget
from producer.feeding import JobInput, store_duplicates
from producer.inputs import Pair
from workers import budget, feeding, input_chunks, jobstate
from workers.closing import collect_task_id, send_collect
from workers.errors import IbtError
from workers.feeding import Feeder, FeederBusy, Options
from workers.models import ModelSpec
from workers.settings import get_settings


class JobFailed(IbtError):
    """The job cannot finish: its callback failed or the workers serving it died."""


@dataclass(frozen=True)
class JobResult:
    """A finished job: its summary, and its records, which stay in Redis until read."""

    job: str
    summary: dict[str, Any]
    client: redis.Redis = field(repr=False)

    def records(self) -> Iterator[dict[str, Any]]:
        """The documented list in input order, streamed a batch at a time."""
        return jobstate.iter_records(self.client, self.job)

    @property
    def results(self) -> list[dict[str, Any]]:
        """The whole list in memory: fine for small jobs; stream large ones with records()."""
        return list(self.records())

    @property
    def cancelled(self) -> bool:
        from workers import cancellation

        return cancellation.is_cancelled(self.client, self.job)

    def first_error(self, model: str) -> str:
        """The error text of ``model``'s first record (for a summary's one-line example)."""
        raw = self.client.hget(jobstate.records_key(self.job, model), "0")
        record = json.loads(str(raw)) if raw else {}
        return str(record.get("error") or "no error text")


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


def submit(
    app: Celery,
    pairs: Sequence[Pair] | JobInput,
    specs: Sequence[ModelSpec],
    *,
    job: str | None = None,
    use_cache: bool = True,
    structured: bool | None = None,
    keep_extra: bool = True,
    max_cost: float | None = None,
    batch: bool | None = None,
) -> str:
    """Enqueue one task per (pair, model) on the model's queue, all at once (no window)."""
    feeder = start(
        app,
        pairs,
        specs,
        job=job,
        options=Options(use_cache, structured, False, batch, keep_extra),
        max_cost=max_cost,
        window=None,
    )
    return feeder.job


def start(
    app: Celery,
    pairs: Sequence[Pair] | JobInput,
    specs: Sequence[ModelSpec],
    *,
    job: str | None = None,
    options: Options | None = None,
    max_cost: float | None = None,
    window: int | None,
    on_cluster: bool = False,
) -> Feeder:
    """Register a job and feed it: everything now (``window`` None), or its first window,
    returning the feeder that tops it up (``wait(feeder=...)``). ``on_cluster`` (``--no-wait``
    with a window) leaves the input in Redis and the feeding to the cluster.

    Everything is validated before this is called, so a job is either fully sent or, if the
    broker fails mid-way, marked ``failed`` in its state; nothing is half-enqueued silently.
    ``max_cost`` (USD) and the models' own ``max_cost`` open the job's budget before its
    first task is sent (check_budget refuses a cap on a model without a price).
    """
    check_budget(specs, max_cost)
    data = pairs if isinstance(pairs, JobInput) else JobInput.from_pairs(pairs)
    options = options or Options()
    if options.batch or any(spec.batch for spec in specs):
        window = None  # provider batches of up to 50,000 items: fed whole (README)
    job = job or new_job_id()
    settings = get_settings()
    client = jobstate.client_for_url(app.conf.result_backend)
    models = [spec.name for spec in specs]
    capped = budget.open_budget(
        client,
        job,
        cap=max_cost,
        model_caps={s.name: s.max_cost for s in specs if s.max_cost is not None},
        expires=settings.result_expires,
    )
    options.budget = capped
    # Identical pairs are judged once per model; each row then carries its first row's verdict.
    jobstate.register(
        client,
        job,
        models=models,
        pairs=data.rows,
        unique=data.unique,
        expires=settings.result_expires,
        extra={"collect_id": collect_task_id(job), "window": window or 0},
    )
    fields = {"options": options.to_json()}
    if capped:
        fields["budget"] = "1"
    client.hset(jobstate.meta_key(job), mapping=fields)  # type: ignore[arg-type]
    store_duplicates(client, job, data, settings.result_expires)
    feeder = Feeder(
        app,
        client,
        job,
        data.feed_rows,
        models,
        options,
        rows=data.rows,
        unique=data.unique,
        window=window,
    )
    if not feeder.claim():
        raise FeederBusy(f"job {job} is being fed by another live process")
    try:
        if on_cluster and window is not None:
            input_chunks.upload(client, job, data.feed_rows(0), settings.result_expires)
            client.hset(jobstate.meta_key(job), mapping={"feed": "cluster", "status": "running"})
            feeder.release()
            feeding.ask_cluster_to_feed(app, job)
            return feeder
        jobstate.set_status(client, job, "running")
        if window is None:
            feeder.feed_all()
            feeder.release()
        else:
            feeder.top_up()
    except Exception:
        jobstate.set_status(client, job, "failed", error="submission to the broker failed")
        raise
    return feeder


def resume_feeding(app: Celery, job: str, data: JobInput, specs: Sequence[ModelSpec]) -> Feeder:
    """Go on feeding ``job`` from its cursor (its feeder died); FeederBusy if one lives."""
    client = jobstate.client_for_url(app.conf.result_backend)
    meta = jobstate.read_meta(client, job) or {}
    feeder = Feeder(
        app,
        client,
        job,
        data.feed_rows,
        [spec.name for spec in specs],
        Options.from_json(meta.get("options")),
        rows=data.rows,
        unique=data.unique,
        window=int(meta.get("window", 0)) or None,
    )
    # A killed producer's lease lapses within LEASE_SECONDS of its last poll.
    if not feeder.claim(wait=feeding.LEASE_SECONDS + 1):
        raise FeederBusy(f"job {job} is being fed by another live process; let it finish")
    return feeder


def backend_without_subscriptions(app: Celery) -> None:
    """Stop the producer's result backend from subscribing to result channels.

    The Redis backend subscribes the sender to every task's result channel (celery#3808) and
    unsubscribes when a result handle is garbage-collected, which fails noisily once the
    broker is gone. We follow jobs through jobstate and read the callback's stored meta, so
    none of that is needed.
    """
    backend = app.backend

    def ignore(*args: object, **kwargs: object) -> None:
        return None

    backend.on_task_call = ignore  # type: ignore[method-assign]
    backend.add_pending_result = ignore  # type: ignore[method-assign]
    backend.remove_pending_result = ignore  # type: ignore[method-assign]


ProgressCallback = Callable[[jobstate.JobProgress], None]


def wait(
    app: Celery,
    job: str,
    *,
    on_progress: ProgressCallback | None = None,
    check_alive: Callable[[], None] | None = None,
    poll_interval: float = 0.5,
    feeder: Feeder | None = None,
    on_poll: Callable[[jobstate.JobProgress], object] | None = None,
) -> JobResult:
    """Block until ``job`` is done and return its result.

    ``check_alive`` raises when the processes serving the job died (embedded mode), so a
    dead stack gives an error instead of a hang. ``feeder`` tops the job's window up at
    each poll; ``on_poll`` (the streamed output) runs after it.
    """
    client = jobstate.client_for_url(app.conf.result_backend)
    try:
        return _wait(app, client, job, on_progress, check_alive, poll_interval, feeder, on_poll)
    finally:
        if feeder is not None:
            with contextlib.suppress(Exception):
                feeder.release()


def _wait(  # type: ignore[no-untyped-def]
    app, client, job, on_progress, check_alive, poll_interval, feeder, on_poll
) -> JobResult:
    with ClosedSignal(client, app, job) as closed:
        return _poll(
            app, client, job, on_progress, check_alive, poll_interval, feeder, on_poll, closed
        )


def _poll(  # type: ignore[no-untyped-def]
    app, client, job, on_progress, check_alive, poll_interval, feeder, on_poll, closed
) -> JobResult:
    started = time.monotonic()
    complete_since: float | None = None
    last_done, moved = -1, time.monotonic()
    while True:
        snapshot = jobstate.progress(client, job)
        if snapshot is None:
            raise JobFailed(f"job {job} is unknown to this broker (or has expired)")
        if snapshot.done != last_done:
            last_done, moved = snapshot.done, time.monotonic()
        elif time.monotonic() - moved > 10 and snapshot.status == "running":
            # A --no-wait job feeds itself from its completions; if none came for a while
            # (its last feed request was lost with a worker, say), ask once more.
            if (jobstate.read_meta(client, job) or {}).get("feed") == "cluster":
                feeding.ask_cluster_to_feed(app, job)
            moved = time.monotonic()
        if feeder is not None and feeder.top_up(snapshot):
            snapshot = jobstate.progress(client, job) or snapshot
        if on_progress is not None:
            on_progress(snapshot)
        if on_poll is not None:
            on_poll(snapshot)
        if snapshot.status not in ("done", "cancelled") and jobstate.all_reported(client, job):
            # The worker that saw the last item sends collect; if none has closed the job a
            # few seconds later (it died in between, say), this does.
            complete_since = complete_since or time.monotonic()
            if time.monotonic() - complete_since > 5:
                send_collect(app, client, job)
        if snapshot.status in ("done", "cancelled"):
            result = fetch(app, job)
            if result is not None:
                return result
        if snapshot.status == "failed":
            raise JobFailed(f"job {job} failed at submission")
        if check_alive is not None:
            check_alive()
        interval = poll_interval if feeder is None or feeder.finished else poll_interval / 2
        closed.wait(poll_delay(time.monotonic() - started, interval))


class ClosedSignal:
    """Wakes the poll loop the moment the job's collect stores its result.

    Celery's Redis backend publishes each stored result on the task's own channel; waiting
    for that message instead of sleeping between polls means a finished job is seen at once
    (a poll interval is up to half a second; a one-pair job is over in about two). Anything
    wrong with the subscription (a broker restarting, a backend that does not publish) and
    the loop simply sleeps, as it did before.
    """

    def __init__(self, client: redis.Redis, app: Celery, job: str) -> None:
        self._pubsub: Any = None
        channel = getattr(app.backend, "get_key_for_task", None)
        if channel is None:
            return
        try:
            self._pubsub = client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(channel(collect_task_id(job)))
        except redis.RedisError:
            self.close()

    def wait(self, seconds: float) -> None:
        """Return after ``seconds``, or sooner if the job's result was stored meanwhile."""
        if self._pubsub is None:
            time.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                if self._pubsub.get_message(timeout=left) is not None:
                    return
        except (redis.RedisError, OSError, ValueError):
            self.close()
            time.sleep(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                self._pubsub.close()
            self._pubsub = None

    def __enter__(self) -> ClosedSignal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def cancel(app: Celery, job: str, specs: Sequence[ModelSpec], *, workers_stay: bool) -> None:
    """Stop ``job``'s spending: its queued items become ``cancelled`` records, and its open
    provider batches are cancelled, by its workers woken now when they go on running
    (``workers_stay``: a cluster, a reused embedded stack), or from here when they stop with
    this process."""
    from workers import cancellation
    from workers.batch.buffering import wake
    from workers.batch.cancel import cancel_open_batches

    client = jobstate.client_for_url(app.conf.result_backend)
    cancellation.request_cancel(client, job, get_settings().result_expires)
    stop_feeding(app, client, job)
    if workers_stay:
        wake(app, client, job, [spec.name for spec in specs])
    else:
        cancel_open_batches(client, job, specs)


def stop_feeding(app: Celery, client: redis.Redis, job: str) -> None:
    """After a cancel: a windowed job must stop being fed and close on what was sent. A live
    feeder sees the flag itself; a cluster-fed job's feed task is woken to see it; a job
    whose feeder is gone (its producer died) is closed from here."""
    meta = jobstate.read_meta(client, job) or {}
    if meta.get("feed") == "cluster":
        feeding.ask_cluster_to_feed(app, job)
    elif int(meta.get("cursor", 0)) < int(meta.get("pairs", 0)) and not client.exists(
        feeding.feeder_key(job)
    ):
        feeding.stop_feeding(app, client, job)


def poll_delay(elapsed: float, longest: float) -> float:
    """A young job is polled often (a one-pair job ends within a second or two, and a fixed
    0.5 s poll added up to half a second to it); an old one every ``longest`` seconds. The
    wait is a tenth of the job's age, so it adds at most ~10% to when a job is seen done."""
    return min(longest, max(0.02, elapsed / 10))


def fetch(app: Celery, job: str) -> JobResult | None:
    """The finished job's result, or None while it is still running.

    Reads the callback's stored meta directly: an ``AsyncResult`` would subscribe to its
    channel and try to unsubscribe when garbage-collected, even after the broker is gone.
    """
    backend_without_subscriptions(app)
    meta = app.backend.get_task_meta(collect_task_id(job))
    state = meta.get("status")
    if state == "FAILURE":
        raise JobFailed(f"job {job}: the collect callback failed: {meta.get('result')!r}")
    if state != "SUCCESS":
        return None
    client = jobstate.client_for_url(app.conf.result_backend)
    return JobResult(job=job, summary=meta["result"]["summary"], client=client)
