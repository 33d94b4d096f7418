"""A bare Celery app with a no-op task: the floor our overhead is measured against."""

from __future__ import annotations

import os

from celery import Celery

URL = os.environ.get("IBT_BROKER_URL", "redis://127.0.0.1:6379/0")
app = Celery("bench_noop", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_default_queue="bench.noop",
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(message: dict[str, object]) -> dict[str, object]:
    return {"ok": True}


@app.task(name="bench.done")
def done(results: list[object]) -> int:
    return len(results)
