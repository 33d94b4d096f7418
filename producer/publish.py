"""Publish a whole chord to Redis in pipelined batches: fast, and flat in memory.

Celery's ``chord(...)`` builds a Signature and a result handle per task and sends each
message in its own round trip (plus a "task-sent" event): about 700 tasks/s and 7 KB of
producer memory per task, measured here. A job of 10^5-10^6 tasks needs better, so this
module writes the same messages (Celery protocol 2, as ``app.amqp.as_task_v2`` makes them,
in kombu's Redis envelope) with ``LPUSH`` in pipelined batches, after setting the chord's
size in the result backend exactly as Celery's Redis backend does. Workers cannot tell the
difference; every integration test runs through this path.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.canvas import Signature
from kombu.utils.json import dumps

BATCH = 2000


@dataclass(frozen=True)
class Outgoing:
    """One header task: where it goes and what it carries."""

    task_id: str
    queue: str
    message: dict[str, Any]
    argsrepr: str


def publish_chord(
    app: Celery, tasks: Iterable[Outgoing], size: int, callback: Signature, group_id: str
) -> int:
    """Send ``size`` header tasks joined by ``callback``; returns how many were sent."""
    backend = app.backend
    # The chord must know its size before any part can finish, or the last part to finish
    # would not see the join complete.
    backend.set_chord_size(group_id, size)
    callback = callback.clone()
    callback.freeze(callback.options["task_id"], group_id=group_id)
    chord_body = dict(callback)
    client = backend.client
    sent = 0
    with client.pipeline(transaction=False) as pipe:
        for index, task in enumerate(tasks):
            pipe.lpush(task.queue, _envelope(app, task, group_id, index, chord_body))
            sent += 1
            if sent % BATCH == 0:
                pipe.execute()
        pipe.execute()
    if sent != size:
        raise ValueError(f"chord size {size} but {sent} tasks were sent")
    return sent


def _envelope(
    app: Celery, task: Outgoing, group_id: str, index: int, chord_body: dict[str, Any]
) -> str:
    headers, properties, body, _ = app.amqp.as_task_v2(
        task.task_id,
        "ibt.score",
        args=(task.message,),
        kwargs={},
        group_id=group_id,
        group_index=index,
        chord=chord_body,
        argsrepr=task.argsrepr,
        kwargsrepr="{}",
        # Records go to the job's records hashes and the chord only counts finished tasks;
        # a per-task result key (a GET and a SET+PUBLISH per task) would be read by no one.
        ignore_result=True,
    )
    properties.update(
        delivery_mode=2,
        priority=0,
        body_encoding="base64",
        delivery_tag=str(uuid.uuid4()),
        # An empty exchange routes by queue name; retries re-publish the same way.
        delivery_info={"exchange": "", "routing_key": task.queue},
    )
    payload = base64.b64encode(json.dumps(body).encode()).decode()
    return dumps(
        {
            "body": payload,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    )
