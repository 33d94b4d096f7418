"""The Celery app and every Celery setting, in one place."""

from __future__ import annotations

from celery import Celery

from workers.models import COLLECT_QUEUE
from workers.settings import get_settings

DEFAULT_QUEUE = "ibt.default"


def create_app(broker_url: str | None = None, result_backend: str | None = None) -> Celery:
    """The app, pointed at ``broker_url`` (default: from settings).

    The producer makes its own instance when it starts an embedded broker on a port known
    only at run time; it sends tasks by name, so it needs no task objects.
    """
    settings = get_settings()
    app = Celery("ibt", include=["workers.tasks", "workers.batch.tasks", "workers.presence"])
    app.conf.update(
        broker_url=broker_url or settings.effective_broker_url,
        result_backend=result_backend or broker_url or settings.effective_result_backend,
        # JSON only: a pickled message is refused, never executed.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # At-least-once: a message is acknowledged after its task finished, so a worker that
        # dies mid-call leaves it to be redelivered; deterministic task ids and the chord's
        # per-task-id bookkeeping make the redelivery count once.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Redis redelivers a message that stays unacknowledged this long (default 1 h in
        # Celery). See Settings.visibility_timeout for why it must exceed retry countdowns.
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # Sweep for expired unacknowledged messages often enough that a dead worker's
            # tasks come back about one visibility timeout after it died (kombu's default
            # sweep runs a scan only every 100 s).
            "unacked_restore_interval": max(1, min(10, int(settings.visibility_timeout / 3))),
            "unacked_restore_throttle": 1,
            # The restore scan runs under a Redis lock that a worker killed inside it keeps
            # for this long (kombu's default: 300 s), holding back every redelivery.
            "unacked_mutex_expire": max(5, min(300, int(settings.visibility_timeout / 2))),
        },
        result_backend_transport_options={"result_chord_ordered": True},
        result_expires=settings.result_expires,
        # Storing a result survives a broker/backend restart instead of failing the task.
        result_backend_always_retry=True,
        result_backend_max_retries=30,
        redis_retry_on_timeout=True,
        task_default_queue=DEFAULT_QUEUE,
        task_routes={"ibt.collect": {"queue": COLLECT_QUEUE}},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # Task events cost three extra publishes per task (a third of a worker's CPU at
        # 200 ms latency, see bench/README.md), so they are off until Flower turns them on
        # (it broadcasts enable_events); they carry task names and the short argsrepr only.
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    return app


app = create_app()
