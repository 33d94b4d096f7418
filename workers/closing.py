"""Closing a job from its own counters: the collect task is sent by whoever sees the last item.

A Celery chord would keep one entry per task in one Redis list and hand the whole list to
its callback: O(job) in one value and one message (2 GB at 2 x 10^7 tasks). Instead, the
Lua script that records an item's outcome (lua/record_outcome.lua) also says when every item
of the job has reported; the worker that sees it sends ``ibt.collect`` with a fixed task id.
A redelivered last task sees it again, and collect is idempotent, so a crash between the
record and the send loses nothing; the waiting producer sends it too if it sees the counters
complete and no collect finished (belt and braces).
"""

from __future__ import annotations

from typing import Any

from workers.models import COLLECT_QUEUE

# A job's collect is sent at most once per this many seconds (duplicates are harmless).
SEND_GUARD_SECONDS = 30


def collect_task_id(job: str) -> str:
    return f"ibt-{job}-collect"


def guard_key(job: str) -> str:
    return f"ibt:job:{job}:closing"


def send_collect(app: Any, client: Any, job: str, *, force: bool = False) -> bool:
    """Send ``job``'s collect task unless one was sent in the last few seconds."""
    if not force and not client.set(guard_key(job), "1", nx=True, ex=SEND_GUARD_SECONDS):
        return False
    app.send_task(
        "ibt.collect",
        kwargs={"job": job},
        task_id=collect_task_id(job),
        queue=COLLECT_QUEUE,
        argsrepr=f"job={job}",
    )
    return True
