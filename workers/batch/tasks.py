"""The scheduled tasks of batch mode: flush a lane into provider batches, poll each batch,
and turn its results into records (see the package docstring for the guarantees)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import redis
from celery import Task

from workers import budget, cache, cancellation, claims, closing, jobstate
from workers.app import app
from workers.batch import buffering
from workers.batch.lane import Lane, custom_id, item_of, model_key, new_batch_id
from workers.batch.protocol import LIMITS, BatchAPI, BatchState, LineResult, api_for
from workers.errors import ProviderError
from workers.judge import prompt_of, verdict_record
from workers.models import ModelSpec
from workers.records import ScoreRequest, error_record, provider_error_record, public
from workers.settings import get_settings
from workers.tasks import _redis, registry

log = logging.getLogger("ibt.worker")

# A lock another worker holds: ask again this much later.
BUSY_RETRY_SECONDS = 2.0
# How long a live holder may keep a lane's or a batch's lock (renewed every 2 s).
LOCK_HOLD_SECONDS = 3600.0
# Resubmissions of one item after batch-level refusals (token_limit_exceeded), and
# failed reads of one batch in a row, before its items become error records.
MAX_RESUBMITS = 20
MAX_POLL_FAILURES = 30
TOKEN_LIMIT_KIND = "token_limit_exceeded"


@contextmanager
def leased(client: redis.Redis, key: str) -> Iterator[bool]:
    """A lock held as a renewed lease (workers/claims.py): one that a dead worker held
    lapses within seconds. Yields whether this task got it."""
    owner = uuid.uuid4().hex
    if not client.set(key, owner, nx=True, ex=claims.LEASE_SECONDS):
        yield False
        return
    leases = claims.leases(client)
    leases.hold(key, owner, LOCK_HOLD_SECONDS)
    try:
        yield True
    finally:
        leases.release(key, owner)
        jobstate.script(client, "release_claim")(keys=[key], args=[owner])


def spec_for(model: str, request: dict[str, Any] | None) -> ModelSpec:
    """The spec a lane's requests are sent with (the job's --structured/--text applied)."""
    spec = registry().resolve(model)
    structured = (request or {}).get("structured")
    return spec if structured is None else replace(spec, structured=structured)


# --------------------------------------------------------------------------- flush


@app.task(name="ibt.batch_flush", bind=True, acks_late=True, ignore_result=True)
def flush(self: Task, job: str, model: str) -> None:
    """Gather a lane's pending items into provider batches (as many as its limits need)."""
    client = _redis()
    lane = Lane(job, model)
    spec = registry().resolve(model)
    with leased(client, lane.lock("flush")) as mine:
        if not mine:
            # Another flush is running; this one comes back, so an item buffered just as
            # that one finished is never left without a flush.
            buffering.schedule_flush(spec, job, BUSY_RETRY_SECONDS)
            return
        client.delete(lane.flush_marker)
        if cancellation.is_cancelled(client, job):
            finisher = Finisher(client, lane, "pending")
            for cid, item in lane.pending_items(client):
                finisher.add(cid, item, cancelled_of(item))
            finisher.flush()
            return
        if token_limited(client, spec):
            buffering.schedule_flush(spec, job, spec.batch_poll_seconds)
            return
        settings = get_settings()
        max_items, max_bytes = buffering.max_items(spec), LIMITS[spec.provider][1]
        while True:
            bid = new_batch_id()
            taken = lane.take(
                client,
                bid,
                max_items=max_items,
                max_bytes=max_bytes,
                expires=settings.result_expires,
            )
            if not taken:
                return
            # Scheduled before the create call: should this worker die in it, the poll
            # finds the batch still 'creating' and finishes the job (looking for the
            # batch the provider may have made first).
            buffering.schedule_poll(spec, job, bid, spec.batch_poll_seconds)
            with leased(client, lane.lock(bid)) as held:
                if held:
                    submit(client, lane, bid)


def token_limited(client: redis.Redis, spec: ModelSpec) -> bool:
    """OpenAI refused a batch for the model's enqueued-token limit: wait until the model's
    running batches finish (or the mark lapses) before creating another."""
    if not client.exists(model_key(spec.name, "token-limited")):
        return False
    return bool(client.scard(model_key(spec.name, "open")))


def submit(client: redis.Redis, lane: Lane, bid: str) -> None:
    """Create batch ``bid`` with its provider and record the provider's id; a create that
    may have happened before (a crash, a timeout) is looked for first."""
    meta = lane.read_meta(client, bid)
    if meta.get("state") != "creating":
        return
    held = lane.held_by(client, bid)
    if not held:
        lane.set_meta(client, bid, state="collected")
        return
    spec = spec_for(lane.model, held[0][1]["request"])
    api = api_for(spec)
    try:
        with leased(client, model_key(spec.name, "create")) as alone:
            if not alone:
                return  # another create of this model is under way; the poll retries
            provider_id = None
            attempted = meta.get("attempted")
            if attempted:
                provider_id = api.find(bid, float(attempted), len(held))
            if provider_id is None:
                lane.set_meta(client, bid, attempted=time.time(), provider=spec.provider)
                requests = [
                    (custom_id(bid, cid), prompt_of(ScoreRequest.from_message(item["request"])))
                    for cid, item in held
                ]
                try:
                    provider_id = api.create(bid, requests)
                except ProviderError as exc:
                    if exc.status is not None:
                        raise
                    # A timeout or a dropped connection: the batch may exist all the same.
                    provider_id = api.find(bid, time.time(), len(held))
                    if provider_id is None:
                        raise
    except ProviderError as exc:
        if exc.retryable:
            log.warning("batch %s of %s: create failed (%s); retrying", bid, lane.model, exc)
            return
        # The provider refused the batch itself (e.g. a bad request): no item ran.
        fail_batch(client, lane, bid, spec, held, exc)
        return
    lane.set_meta(
        client,
        bid,
        state="submitted",
        provider_id=provider_id,
        submitted=time.time(),
        n=len(held),
        # What a poll needs of the items' requests, so it need not read them all each time.
        structured=json.dumps(held[0][1]["request"].get("structured")),
    )
    client.sadd(model_key(spec.name, "open"), f"{lane.job}|{bid}")
    log.info("batch %s of %s (%d items) is %s", bid, lane.model, len(held), provider_id)


# --------------------------------------------------------------------------- poll


@app.task(name="ibt.batch_poll", bind=True, acks_late=True, ignore_result=True)
def poll(self: Task, job: str, model: str, bid: str) -> None:
    """Look at batch ``bid`` once: create it if that never completed, cancel it if its job
    was cancelled, and collect its results once it has ended; otherwise come back later."""
    client = _redis()
    lane = Lane(job, model)
    base_spec = registry().resolve(model)
    with leased(client, lane.lock(bid)) as mine:
        if not mine:
            buffering.schedule_poll(base_spec, job, bid, BUSY_RETRY_SECONDS)
            return
        meta = lane.read_meta(client, bid)
        state = meta.get("state")
        if state == "creating":
            submit(client, lane, bid)
            if lane.read_meta(client, bid).get("state") != "collected":
                buffering.schedule_poll(base_spec, job, bid, base_spec.batch_poll_seconds)
            return
        if state != "submitted":
            return
        spec = spec_for(model, {"structured": json.loads(meta.get("structured", "null"))})
        api = api_for(spec)
        provider_id = meta["provider_id"]
        try:
            if cancellation.is_cancelled(client, job) and not meta.get("cancel_requested"):
                api.cancel(provider_id)
                lane.set_meta(client, bid, cancel_requested=time.time())
            current = api.state(provider_id)
        except ProviderError as exc:
            failures = client.hincrby(lane.meta(bid), "poll_failures", 1)
            if exc.retryable or int(failures) < MAX_POLL_FAILURES:  # type: ignore[arg-type]
                log.warning("batch %s (%s): reading it failed: %s", bid, provider_id, exc)
                buffering.schedule_poll(spec, job, bid, spec.batch_poll_seconds)
                return
            fail_batch(client, lane, bid, spec, lane.held_by(client, bid), exc)
            return
        lane.set_meta(client, bid, status=current.status, counts=json.dumps(current.counts))
        if not current.ended:
            buffering.schedule_poll(spec, job, bid, spec.batch_poll_seconds)
            return
        try:
            held = dict(lane.held_by(client, bid))
            collect(client, lane, bid, spec, api, provider_id, current, held)
        except ProviderError as exc:
            log.warning("batch %s (%s): reading results failed: %s", bid, provider_id, exc)
            buffering.schedule_poll(spec, job, bid, spec.batch_poll_seconds)


def collect(
    client: redis.Redis,
    lane: Lane,
    bid: str,
    spec: ModelSpec,
    api: BatchAPI,
    provider_id: str,
    current: BatchState,
    held: dict[str, dict[str, Any]],
) -> None:
    """Turn an ended batch's results into records; items without one are retried."""
    if current.failed:
        codes = [code for code, _ in current.errors]
        if TOKEN_LIMIT_KIND in codes:
            requeue_all(client, lane, bid, spec, held)
        else:
            detail = "; ".join(f"{code}: {message}" for code, message in current.errors)
            refused = ProviderError(
                f"the provider refused the batch: {detail or current.status}",
                kind="batch_failed",
                retryable=False,
            )
            fail_batch(client, lane, bid, spec, list(held.items()), refused)
        return
    seen: set[str] = set()
    finisher = Finisher(client, lane, bid)
    cancelled = cancellation.is_cancelled(client, lane.job)
    requeued = False
    for line in api.results(provider_id):
        owner, cid = item_of(line.custom_id)
        if owner != bid or cid not in held or cid in seen:
            log.warning("batch %s (%s): result for unknown id %r", bid, provider_id, line.custom_id)
            continue
        seen.add(cid)
        requeued |= handle_line(client, finisher, spec, cid, held[cid], line, cancelled)
    for cid, item in held.items():
        if cid not in seen:  # never ran: OpenAI leaves a cancelled batch's unrun requests out
            unrun = LineResult(custom_id(bid, cid), cancelled=True)
            requeued |= handle_line(client, finisher, spec, cid, item, unrun, cancelled)
    finisher.flush()
    close_batch(client, lane, bid, spec)
    if requeued:
        buffering.schedule_flush(spec, lane.job, spec.batch_flush_seconds)


def handle_line(
    client: redis.Redis,
    finisher: Finisher,
    spec: ModelSpec,
    cid: str,
    item: dict[str, Any],
    line: LineResult,
    cancelled: bool,
) -> bool:
    """Record or retry one request of an ended batch; True if it waits for a later batch."""
    request = ScoreRequest.from_message(item["request"])
    if line.completion is not None:
        finisher.add(cid, item, verdict_record(request, spec, line.completion, batch=True))
        return False
    if cancelled:
        finisher.add(cid, item, cancelled_of(item))
        return False
    error = line.error or ProviderError(
        "canceled: the provider cancelled the request", kind="canceled", retryable=True
    )
    if error.retryable and request.attempt < spec.max_retries:
        return retry_item(client, finisher.lane, finisher.bid, spec, cid, item, request)
    finisher.add(cid, item, provider_error_record(request, error, request.attempt + 1))
    return False


def retry_item(
    client: redis.Redis,
    lane: Lane,
    bid: str,
    spec: ModelSpec,
    cid: str,
    item: dict[str, Any],
    request: ScoreRequest,
) -> bool:
    """A transient failure: again in a later batch (True), or online if the model says so."""
    settings = get_settings()
    jobstate.record_retry(client, request.job, request.model, settings.result_expires)
    again = replace(request, attempt=request.attempt + 1)
    if spec.batch_fallback == "online":
        # Published with the task's own identity; its record closes the job if it is the
        # last. Sent before the item leaves the lane: a crash in between sends it twice, and
        # the verdict cache's claim keeps the second from paying again.
        app.send_task(
            "ibt.score",
            args=[replace(again, online=True).to_message()],
            task_id=item["task"]["id"],
            queue=spec.queue,
            ignore_result=True,
        )
        if request.budget:
            budget.settle(client, request, 0)  # the online task reserves for itself
        lane.release(client, bid, cid)
        return False
    lane.requeue(client, bid, cid, {**item, "request": again.to_message()})
    return True


def requeue_all(
    client: redis.Redis, lane: Lane, bid: str, spec: ModelSpec, held: dict[str, dict[str, Any]]
) -> None:
    """OpenAI's enqueued-token limit refused the batch before any request ran: resubmit its
    items once the model's running batches have finished."""
    client.set(
        model_key(spec.name, "token-limited"), "1", ex=int(max(60, 4 * spec.batch_poll_seconds))
    )
    finisher = Finisher(client, lane, bid)
    for cid, item in held.items():
        resubmits = int(item.get("resubmits", 0)) + 1
        if resubmits > MAX_RESUBMITS:
            request = ScoreRequest.from_message(item["request"])
            record = error_record(
                request,
                f"batch_failed: refused {resubmits - 1} times for the enqueued-token limit",
                kind="batch_failed",
            )
            finisher.add(cid, item, record)
        else:
            lane.requeue(client, bid, cid, {**item, "resubmits": resubmits})
    finisher.flush()
    close_batch(client, lane, bid, spec)
    buffering.schedule_flush(spec, lane.job, spec.batch_poll_seconds)


def fail_batch(
    client: redis.Redis,
    lane: Lane,
    bid: str,
    spec: ModelSpec,
    held: list[tuple[str, dict[str, Any]]],
    error: ProviderError,
) -> None:
    finisher = Finisher(client, lane, bid)
    for cid, item in held:
        request = ScoreRequest.from_message(item["request"])
        finisher.add(cid, item, provider_error_record(request, error, request.attempt + 1))
    finisher.flush()
    close_batch(client, lane, bid, spec)


def close_batch(client: redis.Redis, lane: Lane, bid: str, spec: ModelSpec) -> None:
    lane.set_meta(client, bid, state="collected", collected=time.time())
    client.srem(model_key(spec.name, "open"), f"{lane.job}|{bid}")


def cancelled_of(item: dict[str, Any]) -> dict[str, Any]:
    return cancellation.cancelled_record(ScoreRequest.from_message(item["request"]))


class Finisher:
    """Writes finished items a chunk at a time: records, cache and budget in one round
    trip, then the job is closed if that was its last item, then the items leave the lane
    in one round trip. That order makes a repeat after a crash at any point harmless
    (records are first-report-wins, usage and budget count once, collect is idempotent)."""

    CHUNK = 500

    def __init__(self, client: redis.Redis, lane: Lane, bid: str) -> None:
        self.client = client
        self.lane = lane
        self.bid = bid
        self.entries: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def add(self, cid: str, item: dict[str, Any], record: dict[str, Any]) -> None:
        self.entries.append((cid, item, record))
        if len(self.entries) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        entries, self.entries = self.entries, []
        if not entries:
            return
        client, settings = self.client, get_settings()
        with client.pipeline(transaction=False) as pipe:
            for _, item, record in entries:
                write_record(client, pipe, item, record, settings)
            pipe.execute()
        if jobstate.all_reported(client, self.lane.job):
            closing.send_collect(app, client, self.lane.job)
        with client.pipeline(transaction=False) as pipe:
            for cid, _, _ in entries:
                keys = [self.lane.where, self.lane.items]
                jobstate.queue_script(pipe, "batch_release", keys, [cid, self.bid])
            pipe.execute()


def write_record(
    client: redis.Redis,
    pipe: redis.client.Pipeline,
    item: dict[str, Any],
    record: dict[str, Any],
    settings: Any,
) -> None:
    """Queue an item's record, its cache entry and its budget settlement on ``pipe``."""
    request = ScoreRequest.from_message(item["request"])
    tokens = record.get("_tokens") or [0, 0]
    cost = int(record.get("_cost", 0))
    key = item.get("key")
    reply = record.get("_reply")  # every paid reply, unparseable ones too (workers/cache.py)
    if key and reply:
        pipe.set(
            cache.CACHE_PREFIX + key, json.dumps(reply, ensure_ascii=False), ex=settings.cache_ttl
        )
    jobstate.record_outcome(
        client,
        request.job,
        request.model,
        request.index,
        error="error" in record,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cached=False,
        expires=settings.result_expires,
        record=json.dumps(public(record), ensure_ascii=False),
        attempts=request.attempt + (1 if "_tokens" in record else 0),
        error_kind=record.get("_kind", ""),
        cost=cost,
        usage_once=True,
        pipe=pipe,
    )
    if request.budget:
        budget.settle(client, request, budget.cost_of(record, int(item["reserved"])), pipe=pipe)
