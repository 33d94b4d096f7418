"""Thin glue: the score task (one per pair and model) and the collect callback."""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import replace
from functools import cache as memoize
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Retry

from workers import (
    broker,
    budget,
    cache,
    cancellation,
    claims,
    closing,
    feeding,
    jobstate,
    pricing,
    ratelimit,
    sampling,
)
from workers.app import app
from workers.batch import buffering
from workers.errors import ConfigError, ProviderError
from workers.judge import judge, prompt_of
from workers.models import ModelRegistry, ModelSpec
from workers.parsing import Verdict
from workers.providers import Completion, credentials
from workers.records import (
    ScoreRequest,
    error_record,
    ok_record,
    provider_error_record,
    public,
    sampled_record,
    unparseable_record,
)
from workers.retry import retry_delay
from workers.settings import get_settings

log = logging.getLogger("ibt.worker")
# Celery logs every success at INFO with the task's return value, which holds the pair's
# texts; our own one-line JSON record (below) replaces it, without texts.
logging.getLogger("celery.app.trace").setLevel(logging.WARNING)


@memoize
def registry() -> ModelRegistry:
    return ModelRegistry.load(get_settings().models_file)


@memoize
def _redis() -> Any:
    """Job state and cache client; retries through a broker restart (see jobstate)."""
    return jobstate.client_for_url(app.conf.result_backend)


# How often a task re-checks a claim another task holds on the same verdict. A live claim
# is renewed while its call runs; one left by a worker that died lapses within a lease
# (claims.LEASE_SECONDS), so a re-run picks it up about a second after that.
CLAIM_WAIT_SECONDS = 1.0
# The longest a live call keeps its claim beyond its own timeout (inline capacity waits).
CLAIM_HOLD_MARGIN = 30.0
# How often a task whose worst case does not fit beside the open reservations asks again.
BUDGET_WAIT_SECONDS = 1.0


@app.task(name="ibt.score", bind=True, acks_late=True, max_retries=None, ignore_result=True)
def score(self: Task, message: dict[str, Any]) -> None:
    """Judge one (pair, model). Never raises: every outcome is a record in the job's state.

    Returns None: the chord only needs to know the task finished, and a header result that
    echoed the record would hold every text of the job again in the chord's list.
    """
    settings = get_settings()
    request = ScoreRequest.from_message(message)
    started = time.monotonic()
    client = _redis()
    owner = self.request.id or request.task_id
    record: dict[str, Any] | None = None
    key: str | None = None
    paused: bool | None = None
    try:
        spec = registry().resolve(request.model)
        if request.structured is not None:
            spec = replace(spec, structured=request.structured)
        spec = sampling.sampling_spec(spec, request.samples)
        if request.use_cache:
            key = cache.cache_key(
                spec,
                credentials(spec)[1],
                request.instruction,
                request.generation,
                settings.prompt_file,
                request.samples,
            )
            # N samples are N calls in a row: the claim must outlast them all.
            hold_for = spec.timeout * request.samples + CLAIM_HOLD_MARGIN
            hit, claimed, paused, cancelled = cache.lookup(
                client,
                key,
                owner,
                hold_for,
                ratelimit.PAUSE_PREFIX + spec.name,
                cancellation.cancelled_key(request.job),
            )
            if hit is not None:
                record = cached_record(request, hit)  # free: kept even when cancelled
            elif cancelled:
                record = cancellation.cancelled_record(request)
            elif not claimed:
                max_waits = claims.max_waits(hold_for, CLAIM_WAIT_SECONDS)
                if request.waits < max_waits:
                    waiting = replace(request, waits=request.waits + 1)
                    raise self.retry(args=(waiting.to_message(),), countdown=CLAIM_WAIT_SECONDS)
        # N samples are asked synchronously (the producer refuses --samples with --batch).
        if record is None and request.samples <= 1 and buffering.batching(spec, request):
            # Batch mode: no synchronous rate limits, no claim held for hours; the item
            # waits in its lane and its batch result closes this task's chord part.
            record = buffering.buffer(client, request, spec, self.request, key)
            if record is None:
                if key is not None:
                    cache.settle(client, key, owner, None, settings.cache_ttl)
                raise Ignore()
        if record is None:
            wait = wait_for_capacity(client, spec, request, paused)
            if wait > 0:
                if key is not None:
                    cache.settle(client, key, owner, None, settings.cache_ttl)
                raise self.retry(args=(request.to_message(),), countdown=wait)
            cancelled = wait < 0
            if cancelled:
                record = cancellation.cancelled_record(request)
            else:
                record = judge_within_budget(client, request, spec)
    except budget.BudgetWait:
        if key is not None:
            cache.settle(client, key, owner, None, settings.cache_ttl)
        raise self.retry(args=(request.to_message(),), countdown=BUDGET_WAIT_SECONDS) from None
    except ConfigError as exc:
        record = error_record(request, f"config: {exc}", kind="config")
    except ProviderError as exc:
        if exc.retryable and request.attempt < spec.max_retries:
            delay = retry_delay(
                request.attempt,
                exc.retry_after,
                base=settings.retry_backoff_base,
                cap=settings.retry_backoff_max,
            )
            # A retry is re-published with an ETA and held unacknowledged until then; it
            # must come due well inside the visibility timeout or Redis redelivers it.
            delay = min(delay, max(1.0, 0.8 * settings.visibility_timeout - spec.timeout))
            jobstate.record_retry(client, request.job, request.model, settings.result_expires)
            if exc.retry_after:
                ratelimit.pause(client, spec, exc.retry_after)
            if key is not None:
                cache.settle(client, key, owner, None, settings.cache_ttl)
            again = replace(request, attempt=request.attempt + 1)
            raise self.retry(args=(again.to_message(),), countdown=delay) from None
        record = provider_error_record(request, exc, request.attempt + 1)
        if request.samples > 1:
            # The samples that did arrive were paid for: the summary counts them.
            kept = sampling.load(client, request)
            record["_extra_calls"] = len(kept)
            record["_tokens"] = [
                sum(c.input_tokens for c in kept),
                sum(c.output_tokens for c in kept),
            ]
            record["_cost"] = sum(
                pricing.cost_nano(spec, c.input_tokens, c.output_tokens, batch=False) for c in kept
            )
    except (Retry, Ignore):
        raise
    except Exception as exc:  # a bug here must cost one record, not the whole job
        log.exception("internal error judging %s", request.summary())
        record = error_record(request, f"internal: {exc!r}", kind="internal")
    with client.pipeline(transaction=False) as pipe:
        if key is not None:
            cache.settle(client, key, owner, cache_value(record), settings.cache_ttl, pipe=pipe)
        if request.samples > 1:
            sampling.forget(pipe, request)
        finish(request, record, started, pipe)
        outcome_at = len(pipe) - 1
        acknowledged = broker.acknowledge_in(pipe, self.request.id)  # last: see its doc
        replies = pipe.execute()
    if acknowledged is not None:
        acknowledged()
    if jobstate.completes(replies[outcome_at]):
        closing.send_collect(app, client, request.job)
    elif jobstate.wants_feed(replies[outcome_at]):
        feeding.ask_cluster_to_feed(app, request.job)


# Up to this long a worker thread waits for rate-limit capacity itself (its queue serves only
# this model, so nothing else waits behind it); beyond it the task is deferred with an ETA.
MAX_INLINE_WAIT = 10.0


def wait_for_capacity(
    client: Any,
    spec: ModelSpec,
    request: ScoreRequest,
    paused: bool | None = None,
) -> float:
    """0 once the model's shared limits allow a call (which is then counted), the seconds
    after which a deferred task should ask again, or -1 if the job was cancelled.

    ``paused`` given means both flags were read with the cache lookup; None means they are
    read here, in one round trip. After waiting inline the cancel flag is read again: a
    cancel during the wait must still stop the call.
    """
    if paused is None:
        with client.pipeline(transaction=False) as pipe:
            pipe.exists(ratelimit.PAUSE_PREFIX + spec.name)
            pipe.exists(cancellation.cancelled_key(request.job))
            paused_now, cancelled = pipe.execute()
        if cancelled:
            return -1.0
        paused = bool(paused_now)
    if not (spec.rpm or spec.tpm or spec.rps or paused):
        return 0.0
    tokens = ratelimit.estimate_tokens(request.instruction + request.generation, spec.max_tokens)
    waited = 0.0
    while True:
        wait = ratelimit.wait_seconds(client, app.conf.result_backend, spec, tokens)
        if wait <= 0:
            if waited and cancellation.is_cancelled(client, request.job):
                return -1.0
            return 0.0
        if waited + wait > MAX_INLINE_WAIT:
            return wait + random.uniform(0, 1)
        pause = min(wait, 1.0) * random.uniform(0.8, 1.2)
        time.sleep(pause)
        waited += pause


def judge_within_budget(client: Any, request: ScoreRequest, spec: ModelSpec) -> dict[str, Any]:
    """``judge``, after reserving the calls' worst case when the job has a cap; the
    reservation is settled to the real cost (see workers/budget.py for failed calls).

    With N samples, replies kept by earlier attempts (workers/sampling.py) are not asked
    again: the reservation is the worst case of one call times the samples still missing,
    and it settles to what this attempt's calls cost.
    """
    kept = sampling.load(client, request) if request.samples > 1 else []
    new: list[Completion] = []

    def on_sample(completion: Completion) -> None:
        sampling.keep(client, request, completion)
        new.append(completion)

    def run() -> dict[str, Any]:
        return judge(
            request,
            spec,
            kept=kept,
            on_sample=on_sample,
            before_sample=lambda: capacity_for_sample(client, spec, request),
        )

    if not request.budget:
        return run()
    structured = spec.structured if request.structured is None else request.structured
    one = pricing.worst_case_nano(spec, prompt_of(request), structured=structured, batch=False)
    missing = max(0, request.samples - len(kept))
    needed = one * missing
    if missing:
        refused = budget.reserve_or_refuse(client, request, needed)
        if refused is not None:
            return refused

    def paid() -> int:
        # A reply without usage counts at its worst case, as budget.cost_of does.
        return sum(
            pricing.cost_nano(spec, c.input_tokens, c.output_tokens, batch=False)
            if c.input_tokens or c.output_tokens
            else one
            for c in new
        )

    try:
        record = run()
    except ProviderError as exc:
        # An error status is not billed; a timeout or a dropped connection may have been.
        budget.settle(client, request, paid() + (0 if exc.status else one))
        raise
    except BaseException:
        budget.settle(client, request, needed)
        raise
    if request.samples > 1:
        if missing:
            budget.settle(client, request, paid() if "_tokens" in record else 0)
    else:
        budget.settle(client, request, budget.cost_of(record, needed))
    return record


def capacity_for_sample(client: Any, spec: ModelSpec, request: ScoreRequest) -> None:
    """Wait, in this thread, until the model's shared limits allow one more sample's call
    (and count it). A task's first call is counted before it starts (``wait_for_capacity``);
    its further samples wait here rather than defer, as their siblings are already paid."""
    while True:
        wait = wait_for_capacity(client, spec, request)
        if wait <= 0:  # -1, cancelled: the task's few remaining samples are still asked
            return
        time.sleep(min(wait, MAX_INLINE_WAIT))


def cached_record(request: ScoreRequest, hit: dict[str, Any]) -> dict[str, Any]:
    """The record of a cached reply, parsed now: an unparseable one is an error record again
    (and is not paid for again), one a parser fix can read is a verdict. An N-sample entry
    holds N replies, each parsed now, and gives their median."""
    verdicts = cache.verdicts_of(hit)
    if verdicts:
        record = sampled_record(request, verdicts)
        record["_cached"] = True
        return record
    verdict = cache.verdict_of(hit)
    if isinstance(verdict, Verdict):
        record = ok_record(request, verdict)
    else:
        record = unparseable_record(request, verdict)
    record["_cached"] = True
    return record


def cache_value(record: dict[str, Any]) -> dict[str, Any] | None:
    """What the cache keeps of a record: the reply we paid for, unparseable or not; nothing
    when no reply came (an error status, a cancelled or refused item) or it came from the
    cache."""
    if record.get("_cached"):
        return None
    reply = record.get("_reply")
    return reply if isinstance(reply, dict) else None


def finish(request: ScoreRequest, record: dict[str, Any], started: float, pipe: Any) -> None:
    """Queue the record and its count on ``pipe``, and log one line."""
    settings = get_settings()
    # Provider calls: one per attempt, and the further samples of an N-sample item.
    record["_attempts"] = (
        request.attempt + (0 if record.get("_cached") else 1) + record.get("_extra_calls", 0)
    )
    tokens = record.get("_tokens") or [0, 0]
    jobstate.record_outcome(
        _redis(),
        request.job,
        request.model,
        request.index,
        error="error" in record,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cached=bool(record.get("_cached")),
        expires=settings.result_expires,
        record=json.dumps(public(record), ensure_ascii=False),
        attempts=record["_attempts"],
        error_kind=record.get("_kind", ""),
        cost=int(record.get("_cost", 0)),
        pipe=pipe,
    )
    if log.isEnabledFor(logging.INFO):
        log.info(
            json.dumps(
                {
                    "event": "task_finished",
                    "job": request.job,
                    "pair": request.index,
                    "model": request.model,
                    "attempts": record["_attempts"],
                    "latency_ms": round((time.monotonic() - started) * 1000, 1),
                    "tokens_in": tokens[0],
                    "tokens_out": tokens[1],
                    "cached": bool(record.get("_cached")),
                    "outcome": record.get("_kind", "ok"),
                }
            )
        )


@app.task(name="ibt.collect", bind=True, acks_late=True)
def collect(self: Task, *_: Any, job: str, models: list[str] | None = None) -> dict[str, Any]:
    """Close the job once every (pair, model) has reported (see workers/closing.py).

    The records are already in the job's records hashes (one per model, keyed by pair
    index), where the output streams from, and their counts in the job's stats, so nothing
    here reads a record: it writes the summary from the counters and marks the job done.
    Idempotent: sent by whoever saw the last item, perhaps more than once.
    """
    client = _redis()
    snapshot = jobstate.progress(client, job)
    if snapshot is None or not jobstate.all_reported(client, job):
        return {"job": job, "summary": {}, "open": True}  # early: the last item sends again
    models = snapshot.models
    per_model = snapshot.per_model
    entries = {model: per_model[model].summary() for model in models if model in per_model}
    for model, entry in entries.items():
        if not pricing.known_cost(registry(), model):
            entry["cost_usd"] = None  # unknown, never $0
    summary: dict[str, Any] = {
        "models": entries,
        "items": sum(entry.done for entry in per_model.values()),
        "rows": snapshot.pairs,
        "duplicates": snapshot.pairs - snapshot.unique,
        "lost": 0,
    }
    if snapshot.budget_raw:
        summary["budget"] = budget.parse(snapshot.budget_raw).as_dict()
    status = "cancelled" if cancellation.is_cancelled(client, job) else "done"
    jobstate.set_status(client, job, status, finished=time.time(), summary=json.dumps(summary))
    return {"job": job, "summary": summary}


@app.task(name="ibt.feed", bind=True, acks_late=True, ignore_result=True, max_retries=5)
def feed(self: Task, job: str) -> None:
    """Top up a ``--no-wait`` job's window from its input in Redis (workers/feeding.py).
    A failure (the broker restarting, say) is tried again: nobody else may ask."""
    try:
        feeding.feed_on_cluster(app, _redis(), job)
    except Exception as exc:
        raise self.retry(countdown=2, exc=exc) from None
