"""Cancelling a job: a flag in Redis that every task reads before it may spend money.

``ibt cancel`` (or Ctrl-C on ``ibt score``) sets ``ibt:job:<job>:cancelled``. A task checks it
in the same round trip as its cache lookup, so a queued task, a retry held with an ETA, or a
task waiting on a claim or on rate-limit capacity never reaches the provider once the flag is
set: it becomes an error record of kind ``cancelled`` instead, and the chord still closes the
job with every row. Calls already in flight finish; they are paid for, so their verdicts are
kept and cached. Cached verdicts cost nothing and are still used.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from workers.jobstate import meta_key, read_meta
from workers.records import ScoreRequest, error_record

KIND = "cancelled"


def cancelled_key(job: str) -> str:
    return f"ibt:job:{job}:cancelled"


def request_cancel(client: redis.Redis, job: str, expires: int) -> str:
    """Flag ``job`` as cancelled; returns what happened: ``cancelled``, ``already
    cancelled``, ``finished`` (status done/failed: nothing changes) or ``unknown``."""
    meta = read_meta(client, job)
    if meta is None:
        return "unknown"
    status = meta.get("status", "")
    if status in ("done", "failed"):
        return "finished"
    if not client.set(cancelled_key(job), str(time.time()), nx=True, ex=expires):
        return "already cancelled"
    client.hset(meta_key(job), "status", "cancelling")
    return "cancelled"


def is_cancelled(client: redis.Redis, job: str) -> bool:
    return bool(client.exists(cancelled_key(job)))


def cancelled_record(request: ScoreRequest) -> dict[str, Any]:
    return error_record(
        request, "cancelled: the job was cancelled before this item was judged", kind=KIND
    )
