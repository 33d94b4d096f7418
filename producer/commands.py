"""The ``ibt`` commands' bodies: each takes the parsed arguments and returns an exit code.

Kept apart from ``producer/cli.py`` so that parsing the command line (and ``ibt --help``)
imports none of Celery, Redis, rich or the SDKs; a command imports them when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import time
from pathlib import Path

from producer import outcome
from producer.api import check_samples, early_stack, resolve_models, session
from producer.checks import check_budget, check_config
from producer.inputs import load_pairs
from producer.output import check_output, write_results, write_run_summary
from workers.errors import ConfigError, InputError
from workers.models import queue_name
from workers.settings import get_settings, mask_url

DEMO_PAIRS = Path(__file__).parent / "examples" / "demo_pairs.jsonl"
DEMO_REAL = {"OPENAI_API_KEY": "gpt-4o-mini", "ANTHROPIC_API_KEY": "claude-3-5-haiku-latest"}
DEMO_SIMULATED = {"OPENAI_API_KEY": "simulated-openai", "ANTHROPIC_API_KEY": "simulated-anthropic"}


def cmd_score(args: argparse.Namespace) -> int:
    # Everything that can be wrong is found before a broker is touched or a call is paid.
    check_output(args.output, inputs=[args.input], force=args.force)
    settings = get_settings()
    if args.no_wait and not settings.broker_url:
        raise InputError(
            "--no-wait needs a running cluster (set IBT_BROKER_URL); the embedded stack "
            "lives only as long as this command",
            source="--no-wait",
        )
    from producer.feeding import JobInput
    from producer.inputs import ColumnMap, InputSource, iter_pairs

    source = InputSource.open(args.input, ColumnMap.parse(args.map))
    if args.window is not None and args.window < 1:
        raise InputError("must be at least 1", source="--window")
    specs = resolve_models(args.model)
    check_config(specs)
    check_budget(specs, args.max_cost)
    sampling_notes = check_samples(specs, args.samples, True if args.batch else None)
    if args.dry_run:
        if settings.broker_url:
            _check_cluster()
        return _dry_run(list(iter_pairs(source)), specs, args)
    # One streaming pass validates every row and finds repeated pairs; no text is kept.
    data = JobInput.from_source(source)
    if settings.broker_url:
        _check_cluster()
    with early_stack(specs) as stack:
        return _run(
            data,
            specs,
            args.output,
            stack=stack,
            no_wait=args.no_wait,
            quiet=args.quiet,
            use_cache=not args.no_cache,
            structured=args.structured,
            keep_extra=not args.drop_extra_fields,
            resume=args.resume,
            command=_command_line(args),
            max_cost=args.max_cost,
            batch=True if args.batch else None,
            window=args.window,
            samples=args.samples,
            notes=sampling_notes,
        )


def _dry_run(pairs, specs, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    """Print what the job would send and cost; nothing is enqueued, no provider is called."""
    from producer.estimate import estimate
    from producer.estimate_view import print_estimate
    from producer.local import embedded_store
    from workers import jobstate

    settings = get_settings()
    use_cache = not args.no_cache
    store: contextlib.AbstractContextManager[str | None]
    if settings.broker_url:
        url: str | None = settings.result_backend or settings.effective_broker_url
        store = contextlib.nullcontext(url)
    else:
        store = embedded_store() if use_cache else contextlib.nullcontext(None)
    with store as url:
        client = jobstate.client_for_url(url) if url else None
        estimates = estimate(
            pairs,
            specs,
            client=client,
            use_cache=use_cache,
            structured=args.structured,
            batch=args.batch,
        )
    print_estimate(estimates, max_cost=args.max_cost, cache_consulted=url is not None)
    if args.samples > 1:
        from producer.progress import console

        console.print(
            f"note: --samples {args.samples}: each request above is asked {args.samples} "
            f"times (and the cache looked up for one call): expect {args.samples}x the "
            "tokens and cost",
            highlight=False,
        )
    return outcome.OK


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed, for the resume hint (``ibt`` rather than a module path)."""
    return "ibt " + shlex.join(args.argv or [])


def _check_resume(client, job: str, pairs, specs, *, embedded: bool) -> None:  # type: ignore[no-untyped-def]
    """--resume JOB: the same input and models as JOB; the cache then skips what JOB finished.

    Embedded runs keep their Valkey data in $IBT_HOME/valkey, so JOB is checked there too.
    """
    from workers import jobstate

    snapshot = jobstate.progress(client, job)
    where = f"the embedded store in {get_settings().home}" if embedded else "this broker"
    if snapshot is None:
        raise InputError(f"job {job} is unknown to {where} (or expired)", source="--resume")
    if snapshot.pairs != pairs.rows or snapshot.models != [s.name for s in specs]:
        raise InputError(
            f"job {job} had {snapshot.pairs} pairs x {snapshot.models}; this input has "
            f"{pairs.rows} pairs x {[s.name for s in specs]}",
            source="--resume",
        )


def cmd_demo(args: argparse.Namespace) -> int:
    from producer.progress import console

    settings = get_settings()
    names = [DEMO_REAL[env] if settings.secret(env) else DEMO_SIMULATED[env] for env in DEMO_REAL]
    if any(name.startswith("simulated-") for name in names):
        console.print(
            "[bold yellow]No API key for some providers: using SIMULATED judges[/] "
            "(a local server speaking the provider's wire format; scores are not real)."
        )
    from producer.feeding import JobInput

    pairs = JobInput.from_pairs(load_pairs(str(DEMO_PAIRS)))
    return _run(pairs, resolve_models(names), args.output, quiet=False)


def _run(  # type: ignore[no-untyped-def]
    pairs,
    specs,
    output: str | None,
    *,
    no_wait: bool = False,
    quiet: bool,
    use_cache: bool = True,
    structured: bool | None = None,
    keep_extra: bool = True,
    resume: str | None = None,
    command: str = "ibt score ...",
    max_cost: float | None = None,
    batch: bool | None = None,
    window: int | None = None,
    samples: int = 1,
    notes: list[str] | None = None,
    stack=None,
) -> int:
    """Submit ``pairs`` (a ``JobInput``), feed its window and stream its output as it runs
    (on the embedded ``stack`` already started, if given: ``api.early_stack``)."""
    from producer import job as jobs
    from producer.feeding import default_window
    from producer.progress import LiveProgress, NoConsumerWatch, console, print_summary
    from producer.streamed_output import StreamedOutput
    from workers import cancellation, jobstate
    from workers.feeding import Options

    started = time.monotonic()
    options = Options(use_cache, structured, False, batch, keep_extra, samples)
    for note in notes or []:
        console.print(f"note: {note}", highlight=False)
    with session(specs, started=stack) as current:
        client = jobstate.client_for_url(current.app.conf.result_backend)
        feeder = None
        if resume:
            _check_resume(client, resume, pairs, specs, embedded=current.embedded)
            status = (jobstate.read_meta(client, resume) or {}).get("status")
            if status == "running" and not cancellation.is_cancelled(client, resume):
                # Its feeder died (not cancelled): the same job goes on from its cursor.
                feeder = jobs.resume_feeding(current.app, resume, pairs, specs)
        if feeder is None:
            feeder = jobs.start(
                current.app,
                pairs,
                specs,
                options=options,
                max_cost=max_cost,
                window=window or default_window(specs),
                on_cluster=no_wait,
            )
        job = feeder.job
        console.print(f"job [bold]{job}[/]: {pairs.rows} pairs x {len(specs)} models")
        if no_wait:
            print(job)
            return outcome.OK
        writer = StreamedOutput(client, job, output)
        writer.claim()
        watch = None if current.embedded else NoConsumerWatch(client, specs)
        try:
            with LiveProgress(enabled=not quiet) as live:

                def on_progress(snapshot: jobstate.JobProgress) -> None:
                    live.update(snapshot)
                    if watch is not None:
                        for warning in watch.check(snapshot):
                            live.warn(warning)

                result = jobs.wait(
                    current.app,
                    job,
                    on_progress=on_progress,
                    check_alive=current.check_alive,
                    feeder=feeder,
                    on_poll=lambda _: writer.drain(),
                )
        except KeyboardInterrupt:
            writer.abandon()
            _cancel_quietly(job, current.app, specs, embedded=current.embedded)
            _say_interrupted(job, client, embedded=current.embedded, command=command)
            raise
        except BaseException as exc:
            writer.abandon()
            if isinstance(exc, BrokenPipeError) and not current.embedded:
                # The reader of our output is gone (`| head`): nobody will read the rest, so
                # the job must not go on spending on the cluster.
                _cancel_quietly(job, current.app, specs, embedded=False)
            raise
        # Inside the session: the last rows stream from the (maybe embedded) broker.
        written = writer.finish()
        write_run_summary(output, job, result.summary, written)
        failures = outcome.systemic_failures(
            result.summary,
            lambda model: writer.first_errors.get(model) or result.first_error(model),
        )
        cancelled = result.cancelled
    if output not in (None, "-"):
        console.print(f"wrote {written} records to {output}")
    print_summary(job, result.summary, time.monotonic() - started)
    for failure in failures:
        console.print(f"[bold red]failed:[/] {failure.describe()}", highlight=False)
    if cancelled:
        console.print(
            f"[bold red]cancelled:[/] job {job} was cancelled; rows never judged are error "
            "records of kind 'cancelled'",
            highlight=False,
        )
        return outcome.FAILED
    return outcome.SYSTEMIC_EXIT if failures else outcome.OK


def _cancel_quietly(job: str, app, specs, *, embedded: bool) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C on a command the user waits on cancels its job: nothing goes on spending."""
    from producer import job as jobs
    from producer.connection import describe
    from producer.progress import console

    try:
        jobs.cancel(app, job, specs, workers_stay=not embedded)
    except Exception as exc:  # the broker may be going down with us; say so, don't hide it
        console.print(f"[red]could not cancel job {job}: {describe(exc)}[/]", highlight=False)


def _say_interrupted(job: str, client, *, embedded: bool, command: str) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C: say what happened to the job and what to type next."""
    from producer.progress import console
    from workers import jobstate

    try:
        snapshot = jobstate.progress(client, job)
        done = f" at {snapshot.done}/{snapshot.total} judged" if snapshot else ""
    except Exception:  # the broker may be going down with us
        done = ""
    where = "stopped" if embedded else "cancelled on the cluster"
    again = (
        f"run `{command}` again"
        if command.startswith("ibt demo")
        else f"run:\n  {command} --resume {job}"
    )
    console.print(
        f"[red]interrupted:[/] job {job} {where}{done}: nothing more is sent to the "
        "providers; calls in flight finish and their verdicts are kept and cached. To "
        f"finish the job, paying only for what is missing, {again}",
        highlight=False,
    )


def _check_cluster() -> None:
    """Fail in seconds, in one line, if the cluster's Redis cannot be used."""
    from producer.connection import check_broker

    settings = get_settings()
    check_broker(settings.effective_broker_url)
    if settings.result_backend and settings.result_backend != settings.broker_url:
        check_broker(settings.result_backend)


def _remote_app(*, job: str | None = None, command: str = "this command"):  # type: ignore[no-untyped-def]
    """The cluster's app, once its broker answered; a clear error when there is none."""
    from workers.app import create_app

    settings = get_settings()
    if not settings.broker_url:
        if job is not None:
            raise ConfigError(
                f"job {job} is not on a cluster (IBT_BROKER_URL is not set): a job run without "
                "it lives in an embedded stack that is gone when its `ibt score` ends. Write "
                "its results with `ibt score ... -o FILE`, or set IBT_BROKER_URL to a "
                "cluster's Redis to submit there and follow jobs from any host",
                source="IBT_BROKER_URL",
            )
        raise ConfigError(
            f"{command} talks to a cluster: set IBT_BROKER_URL to its Redis "
            "(redis://:PASSWORD@host:6379/0)",
            source="IBT_BROKER_URL",
        )
    _check_cluster()
    return create_app(settings.effective_broker_url, settings.result_backend)


def _unknown_job(app, job: str) -> int:  # type: ignore[no-untyped-def]
    from producer.progress import console

    console.print(f"[red]job {job} is unknown to {mask_url(app.conf.broker_url)} (or expired)[/]")
    return outcome.FAILED


def cmd_result(args: argparse.Namespace) -> int:
    from producer import job as jobs
    from producer.progress import console, print_summary
    from workers import jobstate

    check_output(args.output)
    app = _remote_app(job=args.job)
    if args.follow:
        return _follow(app, args.job, args.output)
    result = jobs.fetch(app, args.job)
    meta = jobstate.read_meta(jobstate.client_for_url(app.conf.result_backend), args.job) or {}
    if int(meta.get("written", 0)):
        raise InputError(
            f"job {args.job}'s rows were streamed to {meta.get('out_path', 'stdout')} as they "
            "finished and are no longer in Redis; that file is the result",
            source=args.job,
        )
    if result is None:
        snapshot = jobstate.progress(jobstate.client_for_url(app.conf.result_backend), args.job)
        if snapshot is None:
            return _unknown_job(app, args.job)
        console.print(
            f"job {args.job} is still {snapshot.status}: {snapshot.done}/{snapshot.total}"
        )
        return outcome.STILL_RUNNING
    written = write_results(result.records(), args.output)
    write_run_summary(args.output, args.job, result.summary, written)
    print_summary(args.job, result.summary)
    return outcome.OK


def _follow(app, job: str, output: str | None) -> int:  # type: ignore[no-untyped-def]
    """``ibt result JOB --follow``: write rows as they finish, from any host, until the job
    is done; resumes where an earlier writer of this job stopped (producer/streamed_output)."""
    from producer import job as jobs
    from producer.progress import console, print_summary
    from producer.streamed_output import StreamedOutput
    from workers import jobstate

    client = jobstate.client_for_url(app.conf.result_backend)
    if jobstate.read_meta(client, job) is None:
        return _unknown_job(app, job)
    writer = StreamedOutput(client, job, output)
    writer.claim()
    try:
        result = jobs.wait(app, job, on_poll=lambda _: writer.drain())
    except BaseException:
        writer.abandon()
        raise
    written = writer.finish()
    write_run_summary(output, job, result.summary, written)
    if output not in (None, "-"):
        console.print(f"wrote {written} records to {output}")
    print_summary(job, result.summary)
    return outcome.FAILED if result.cancelled else outcome.OK


def cmd_cancel(args: argparse.Namespace) -> int:
    """Stop a job's spending from any host: queued items become 'cancelled' error records."""
    from producer.progress import console
    from workers import cancellation, jobstate

    app = _remote_app(job=args.job)
    client = jobstate.client_for_url(app.conf.result_backend)
    what = cancellation.request_cancel(client, args.job, get_settings().result_expires)
    snapshot = jobstate.progress(client, args.job)
    if what == "unknown" or snapshot is None:
        return _unknown_job(app, args.job)
    progress = f"{snapshot.done}/{snapshot.total} judged"
    if what == "finished":
        console.print(
            f"job {args.job} had already finished ({snapshot.status}, {progress}); "
            "nothing to cancel",
            highlight=False,
        )
    elif what == "already cancelled":
        console.print(f"job {args.job} was already cancelled ({progress})", highlight=False)
    else:
        from producer.job import stop_feeding
        from workers.batch.buffering import wake

        stop_feeding(app, client, args.job)
        wake(app, client, args.job, snapshot.models)
        console.print(
            f"cancelled job {args.job} at {progress}: queued items will not be sent (they "
            "become error records of kind 'cancelled'); calls in flight finish and are kept. "
            f"`ibt status {args.job}` shows when it has closed",
            highlight=False,
        )
    return outcome.OK


def cmd_status(args: argparse.Namespace) -> int:
    from rich.table import Table

    from producer.progress import NoConsumerWatch, budget_line, console, usd
    from workers import jobstate, presence
    from workers.models import ModelRegistry
    from workers.pricing import known_cost

    app = _remote_app(job=args.job)
    client = jobstate.client_for_url(app.conf.result_backend)
    snapshot = jobstate.progress(client, args.job)
    if snapshot is None:
        return _unknown_job(app, args.job)
    registry = ModelRegistry.load(get_settings().models_file)
    table = Table(title=f"job {args.job}: {snapshot.status}, {snapshot.done}/{snapshot.total}")
    columns = (
        *("model", "done", "pending", "errors", "retries"),
        *("queue", "workers", "tokens", "cost"),
    )
    idle: list[str] = []
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for model in snapshot.models:
        entry = snapshot.per_model[model]
        # Messages waiting in the model's queue now, from every job (Celery's Redis queues
        # are plain lists named after the queue).
        queue = queue_name(model)
        queued = client.llen(queue)
        serving = presence.live_consumers(client, queue)
        pending = snapshot.unique - entry.done
        if pending and not serving and snapshot.status in ("running", "submitting"):
            idle.append(model)
        table.add_row(
            model,
            str(entry.done),
            str(pending),
            str(entry.errors),
            str(entry.retries),
            str(queued),
            str(serving),
            f"{entry.input_tokens:,}/{entry.output_tokens:,}",
            usd(entry.cost_nano) if known_cost(registry, model) else "?",
        )
    console.print(table)
    _print_batches(client, args.job, snapshot.models)
    if snapshot.budget_raw:
        from workers.budget import parse

        console.print(budget_line(parse(snapshot.budget_raw).as_dict()), highlight=False)
    for model in idle:
        console.print(f"[bold yellow]warning:[/] {NoConsumerWatch.message(model)}", highlight=False)
    return outcome.OK


def _print_batches(client, job: str, models: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Each provider batch of the job: its id, state and request counts."""
    import json

    from rich.table import Table

    from producer.progress import console
    from workers.batch.lane import Lane

    rows = []
    for model in models:
        lane = Lane(job, model)
        for bid in lane.batch_ids(client):
            meta = lane.read_meta(client, bid)
            counts = json.loads(meta.get("counts", "{}"))
            rows.append(
                (
                    model,
                    meta.get("provider_id", "(creating)"),
                    meta.get("status", meta.get("state", "?")),
                    meta.get("n", "?"),
                    " ".join(f"{k} {v}" for k, v in counts.items() if v),
                )
            )
    if not rows:
        return
    table = Table(title="provider batches")
    for column in ("model", "batch", "state", "items", "counts"):
        table.add_column(column, justify="right" if column == "items" else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def cmd_workers(args: argparse.Namespace) -> int:
    """Live workers per model queue, from Celery's broadcast inspect."""
    from rich.table import Table

    from producer.progress import console

    app = _remote_app(command="ibt workers")
    inspect = app.control.inspect(timeout=args.timeout)
    queues = inspect.active_queues() or {}
    stats = inspect.stats() or {}
    active = inspect.active() or {}
    table = Table(title=f"workers on {mask_url(app.conf.broker_url)}")
    for column in ("queue", "worker", "threads", "running", "done"):
        table.add_column(column, justify="left" if column in ("queue", "worker") else "right")
    rows = []
    for node, node_queues in queues.items():
        info = stats.get(node, {})
        threads = str(info.get("pool", {}).get("max-concurrency", "?"))
        done = str(sum(info.get("total", {}).values()))
        for queue in node_queues:
            rows.append((queue["name"], node, threads, str(len(active.get(node, []))), done))
    for row in sorted(rows):
        table.add_row(*row)
    console.print(table)
    if not rows:
        console.print("[yellow]no worker answered[/]")
        return outcome.FAILED
    return outcome.OK


def cmd_flower(args: argparse.Namespace) -> int:
    """Flower on our app (``celery -A workers flower`` works too)."""
    _remote_app(command="ibt flower")
    from workers.app import app

    argv = ["flower", f"--port={args.port}", *args.extra]
    app.start(argv)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from producer.curation.report import run_report

    return run_report(
        args.results,
        args.png,
        args.prices or get_settings().models_file,
        as_json=args.json,
        gold=args.gold,
    )


def cmd_select(args: argparse.Namespace) -> int:
    from producer.curation.select import run_select

    return run_select(
        args.results,
        min_score=args.min_score,
        agg=args.agg,
        output=args.output,
        gold=args.gold,
        target_precision=args.target_precision,
        human_min=args.human_min,
        disagreement=args.disagreement,
    )


def cmd_reparse(args: argparse.Namespace) -> int:
    from producer.curation.reparse import run_reparse

    return run_reparse(args.results, args.output)


def cmd_simulator(args: argparse.Namespace) -> int:
    from producer import simulator

    return int(simulator.main(args.extra) or 0)
