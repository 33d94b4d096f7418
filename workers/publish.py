"""Task messages written straight to Redis: fast, flat in memory, in the caller's pipeline.

Celery's ``apply_async`` builds a Signature and a result handle per task and sends each
message in its own round trip (plus a "task-sent" event): about 700 tasks/s and 7 KB of
producer memory per task, measured here. A job of 10^5-10^7 tasks needs better, so this
module writes the same messages (Celery protocol 2, as ``app.amqp.as_task_v2`` makes them,
in kombu's Redis envelope) with ``LPUSH`` on a pipeline the caller owns: the feeder
(producer/feeding.py) sends a window's messages and its cursor in one transaction. Workers
cannot tell the difference; every integration test runs through this path. There is no
chord: a job closes from its own counters (workers/closing.py).
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu.utils.json import dumps


@dataclass(frozen=True)
class Outgoing:
    """One header task: where it goes and what it carries."""

    task_id: str
    queue: str
    message: dict[str, Any]
    argsrepr: str


def envelope(app: Celery, task: Outgoing) -> str:
    headers, properties, body, _ = app.amqp.as_task_v2(
        task.task_id,
        "ibt.score",
        args=(task.message,),
        kwargs={},
        argsrepr=task.argsrepr,
        kwargsrepr="{}",
        # Records go to the job's records hashes and the job closes from its counters;
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
