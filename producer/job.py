"""Submit a job as one chord, follow its progress from our own counters, fetch its result."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from producer.checks import check_budget
from producer.inputs import Pair
from producer.publish import Outgoing, publish_chord
from workers import budget, jobstate
from workers.errors import IbtError
from workers.models import COLLECT_QUEUE, ModelSpec
from workers.records import ScoreRequest
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


def collect_task_id(job: str) -> str:
    return f"ibt-{job}-collect"


def submit(
    app: Celery,
    pairs: Sequence[Pair],
    specs: Sequence[ModelSpec],
    *,
    job: str | None = None,
    use_cache: bool = True,
    structured: bool | None = None,
    keep_extra: bool = True,
    max_cost: float | None = None,
    batch: bool | None = None,
) -> str:
    """Enqueue one task per (pair, model) on the model's queue, joined by the collect chord.

    Everything is validated before this is called, so a job is either fully sent or, if the
    broker fails mid-way, marked ``failed`` in its state; nothing is half-enqueued silently.
    ``max_cost`` (USD) and the models' own ``max_cost`` open the job's budget before its
    first task is sent (check_budget refuses a cap on a model without a price).
    """
    check_budget(specs, max_cost)
    job = job or new_job_id()
    settings = get_settings()
    client = jobstate.client_for_url(app.conf.result_backend)
    models = [spec.name for spec in specs]
    # Identical pairs are judged once per model; the callback copies the verdict to every row.
    first_row: dict[tuple[str, str], int] = {}
    rows = [first_row.setdefault(pair.texts, row) for row, pair in enumerate(pairs)]
    jobstate.register(
        client,
        job,
        models=models,
        pairs=len(pairs),
        unique=len(first_row),
        expires=settings.result_expires,
        extra={"collect_id": collect_task_id(job)},
    )
    capped = budget.open_budget(
        client,
        job,
        cap=max_cost,
        model_caps={s.name: s.max_cost for s in specs if s.max_cost is not None},
        expires=settings.result_expires,
    )
    if capped:
        client.hset(jobstate.meta_key(job), "budget", "1")
    if len(first_row) < len(pairs):
        client.set(jobstate.rows_key(job), json.dumps(rows), ex=settings.result_expires)
    if keep_extra:
        extras = ((row, p.extra) for row, p in enumerate(pairs) if p.extra)
        jobstate.store_extra(client, job, extras, settings.result_expires)
    callback = app.signature(
        "ibt.collect",
        kwargs={"job": job, "models": models},
        task_id=collect_task_id(job),
        queue=COLLECT_QUEUE,
        argsrepr=f"job={job}",
    )

    def outgoing() -> Iterator[Outgoing]:
        for index in first_row.values():
            pair = pairs[index]
            for spec in specs:
                request = ScoreRequest(
                    job,
                    index,
                    spec.name,
                    pair.instruction,
                    pair.generation,
                    use_cache=use_cache,
                    structured=structured,
                    budget=capped,
                    batch=batch,
                )
                yield Outgoing(request.task_id, spec.queue, request.to_message(), request.summary())

    try:
        publish_chord(app, outgoing(), len(first_row) * len(specs), callback, group_id=job)
    except Exception:
        jobstate.set_status(client, job, "failed", error="submission to the broker failed")
        raise
    jobstate.set_status(client, job, "running")
    return job


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
) -> JobResult:
    """Block until ``job`` is done and return its result.

    ``check_alive`` raises when the processes serving the job died (embedded mode), so a
    dead stack gives an error instead of a hang.
    """
    client = jobstate.client_for_url(app.conf.result_backend)
    started = time.monotonic()
    while True:
        snapshot = jobstate.progress(client, job)
        if snapshot is None:
            raise JobFailed(f"job {job} is unknown to this broker (or has expired)")
        if on_progress is not None:
            on_progress(snapshot)
        if snapshot.status in ("done", "cancelled"):
            result = fetch(app, job)
            if result is not None:
                return result
        if snapshot.status == "failed":
            raise JobFailed(f"job {job} failed at submission")
        if check_alive is not None:
            check_alive()
        time.sleep(poll_delay(time.monotonic() - started, poll_interval))


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
    if workers_stay:
        wake(app, client, job, [spec.name for spec in specs])
    else:
        cancel_open_batches(client, job, specs)


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
