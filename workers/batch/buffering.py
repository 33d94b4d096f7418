"""The score task's side of batch mode: put one item in its lane and make sure a flush comes."""

from __future__ import annotations

from typing import Any

import redis

from workers import budget, pricing
from workers.app import app
from workers.batch.lane import Lane
from workers.batch.protocol import LIMITS, LINE_OVERHEAD_BYTES
from workers.judge import prompt_of, unjudgeable
from workers.models import ModelSpec
from workers.records import ScoreRequest
from workers.settings import get_settings


def batching(spec: ModelSpec, request: ScoreRequest) -> bool:
    """Whether ``request`` goes through a provider batch (its job's --batch, or the model's
    ``batch = true``), unless it is a batch's retry sent online."""
    wanted = spec.batch if request.batch is None else request.batch
    return wanted and not request.online


def max_items(spec: ModelSpec) -> int:
    limit = LIMITS[spec.provider][0]
    return min(spec.batch_max_requests or limit, limit)


def buffer(
    client: redis.Redis,
    request: ScoreRequest,
    spec: ModelSpec,
    task: Any,
    cache_key: str | None,
) -> dict[str, Any] | None:
    """Buffer ``request`` for a batch and return None, or return the record of an item that
    is not sent (not worth a call, or over the budget). Raises budget.BudgetWait.

    ``task`` is the score task's Celery request: its id names the item's online retry.
    """
    refused = unjudgeable(request, spec)
    if refused is not None:
        return refused
    structured = spec.structured if request.structured is None else request.structured
    prompt = prompt_of(request)
    reserved = 0
    if request.budget:
        reserved = pricing.worst_case_nano(spec, prompt, structured=structured, batch=True)
        refused = budget.reserve_or_refuse(client, request, reserved)
        if refused is not None:
            return refused
    settings = get_settings()
    item = {
        "request": request.to_message(),
        "task": {"id": task.id, "group": task.group, "group_index": task.group_index},
        "size": len(prompt.encode()) + LINE_OVERHEAD_BYTES,
        "key": cache_key,
        "reserved": reserved,
    }
    lane = Lane(request.job, spec.name)
    pending = lane.buffer(client, str(request.index), item, settings.result_expires)
    if pending >= max_items(spec):
        schedule_flush(spec, request.job)
    elif pending > 0 and client.set(
        lane.flush_marker, "1", nx=True, ex=int(spec.batch_flush_seconds * 2) + 5
    ):
        schedule_flush(spec, request.job, spec.batch_flush_seconds)
    return None


def schedule_flush(spec: ModelSpec, job: str, countdown: float = 0.0) -> None:
    app.send_task(
        "ibt.batch_flush",
        args=[job, spec.name],
        queue=spec.queue,
        countdown=countdown or None,
        ignore_result=True,
    )


def schedule_poll(spec: ModelSpec, job: str, bid: str, countdown: float) -> None:
    # A scheduled task is held unacknowledged until due: keep it well inside the
    # visibility timeout, or Redis would hand it to a second worker.
    countdown = min(countdown, 0.5 * get_settings().visibility_timeout)
    app.send_task(
        "ibt.batch_poll",
        args=[job, spec.name, bid],
        queue=spec.queue,
        countdown=countdown or None,
        ignore_result=True,
    )


def wake(celery_app: Any, client: redis.Redis, job: str, models: list[str]) -> int:
    """Look at the job's lanes now rather than at their next scheduled poll (after a cancel:
    open provider batches are cancelled, buffered items become 'cancelled' records).
    Returns how many tasks were sent."""
    from workers.batch.lane import OPEN_STATES
    from workers.models import queue_name

    sent = 0
    for model in models:
        lane = Lane(job, model)
        queue = queue_name(model)
        if client.llen(lane.pending):
            celery_app.send_task("ibt.batch_flush", args=[job, model], queue=queue)
            sent += 1
        for bid in lane.batch_ids(client):
            if client.hget(lane.meta(bid), "state") in OPEN_STATES:
                celery_app.send_task("ibt.batch_poll", args=[job, model, bid], queue=queue)
                sent += 1
    return sent
