"""The ``ibt`` commands: parse arguments, call the API, print. Nothing else lives here."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from producer import job as jobs
from producer.api import resolve_models, session
from producer.inputs import load_pairs
from producer.output import write_results
from producer.progress import LiveProgress, console, print_summary
from workers.errors import IbtError, InputError
from workers.models import COLLECT_QUEUE, queue_name
from workers.settings import get_settings

PASS_THROUGH = ("flower", "simulator")
DEMO_PAIRS = Path(__file__).parent / "examples" / "demo_pairs.jsonl"
DEMO_REAL = {"OPENAI_API_KEY": "gpt-4o-mini", "ANTHROPIC_API_KEY": "claude-3-5-haiku-latest"}
DEMO_SIMULATED = {"OPENAI_API_KEY": "simulated-openai", "ANTHROPIC_API_KEY": "simulated-anthropic"}


def _apply_config_flags(args: argparse.Namespace) -> None:
    """Flags override the matching variables; children (embedded workers) inherit them."""
    for flag, variable in (("models_file", "IBT_MODELS_FILE"), ("prompt_file", "IBT_PROMPT_FILE")):
        value = getattr(args, flag, None)
        if value:
            if not Path(value).is_file():
                raise InputError("no such file", source=value, field=f"--{flag.replace('_', '-')}")
            os.environ[variable] = str(Path(value).resolve())
    get_settings.cache_clear()


def cmd_score(args: argparse.Namespace) -> int:
    pairs = load_pairs(args.input)
    specs = resolve_models(args.model)
    if args.no_wait and not get_settings().broker_url:
        raise InputError(
            "--no-wait needs a running cluster (set IBT_BROKER_URL); the embedded stack "
            "lives only as long as this command",
            source="--no-wait",
        )
    if args.resume:
        _check_resume(args.resume, pairs, specs)
    return _run(
        pairs,
        specs,
        args.output,
        no_wait=args.no_wait,
        quiet=args.quiet,
        use_cache=not args.no_cache,
        structured=args.structured,
    )


def _check_resume(job: str, pairs, specs) -> None:  # type: ignore[no-untyped-def]
    """--resume JOB: the same input and models as JOB; the cache then skips what JOB finished."""
    from workers import jobstate

    if not get_settings().broker_url:
        return  # embedded: the job's broker is gone with it; its cached verdicts remain
    client = jobstate.client_for_url(_remote_app().conf.result_backend)
    snapshot = jobstate.progress(client, job)
    if snapshot is None:
        raise InputError(f"job {job} is unknown to this broker (or expired)", source="--resume")
    if snapshot.pairs != len(pairs) or snapshot.models != [s.name for s in specs]:
        raise InputError(
            f"job {job} had {snapshot.pairs} pairs x {snapshot.models}; this input has "
            f"{len(pairs)} pairs x {[s.name for s in specs]}",
            source="--resume",
        )


def cmd_demo(args: argparse.Namespace) -> int:
    settings = get_settings()
    names = [DEMO_REAL[env] if settings.secret(env) else DEMO_SIMULATED[env] for env in DEMO_REAL]
    if any(name.startswith("simulated-") for name in names):
        console.print(
            "[bold yellow]No API key for some providers: using SIMULATED judges[/] "
            "(a local server speaking the provider's wire format; scores are not real)."
        )
    return _run(load_pairs(str(DEMO_PAIRS)), resolve_models(names), args.output, quiet=False)


def _run(  # type: ignore[no-untyped-def]
    pairs,
    specs,
    output: str | None,
    *,
    no_wait: bool = False,
    quiet: bool,
    use_cache: bool = True,
    structured: bool | None = None,
) -> int:
    started = time.monotonic()
    with session(specs) as current:
        job = jobs.submit(current.app, pairs, specs, use_cache=use_cache, structured=structured)
        console.print(f"job [bold]{job}[/]: {len(pairs)} pairs x {len(specs)} models")
        if no_wait:
            print(job)
            return 0
        with LiveProgress(enabled=not quiet) as live:
            result = jobs.wait(
                current.app, job, on_progress=live.update, check_alive=current.check_alive
            )
        # Inside the session: the records stream from the (maybe embedded) broker.
        write_results(result.records(), output)
    if output not in (None, "-"):
        console.print(f"wrote {result.count} records to {output}")
    print_summary(job, result.summary, time.monotonic() - started)
    return 0


def _remote_app():  # type: ignore[no-untyped-def]
    from workers.app import create_app

    settings = get_settings()
    return create_app(settings.effective_broker_url, settings.result_backend)


def cmd_result(args: argparse.Namespace) -> int:
    app = _remote_app()
    result = jobs.fetch(app, args.job)
    if result is None:
        from workers import jobstate

        snapshot = jobstate.progress(jobstate.client_for_url(app.conf.result_backend), args.job)
        if snapshot is None:
            console.print(f"[red]job {args.job} is unknown to {app.conf.broker_url}[/]")
            return 1
        console.print(
            f"job {args.job} is still {snapshot.status}: {snapshot.done}/{snapshot.total}"
        )
        return 3
    write_results(result.records(), args.output)
    print_summary(args.job, result.summary)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from rich.table import Table

    from workers import jobstate

    app = _remote_app()
    client = jobstate.client_for_url(app.conf.result_backend)
    snapshot = jobstate.progress(client, args.job)
    if snapshot is None:
        console.print(f"[red]job {args.job} is unknown to this broker[/]")
        return 1
    table = Table(title=f"job {args.job}: {snapshot.status}, {snapshot.done}/{snapshot.total}")
    columns = ("model", "done", "pending", "errors", "retries", "queue", "tokens in", "tokens out")
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for model in snapshot.models:
        entry = snapshot.per_model[model]
        # Messages waiting in the model's queue now, from every job (Celery's Redis queues
        # are plain lists named after the queue).
        queued = client.llen(queue_name(model))
        table.add_row(
            model,
            str(entry.done),
            str(snapshot.unique - entry.done),
            str(entry.errors),
            str(entry.retries),
            str(queued),
            f"{entry.input_tokens:,}",
            f"{entry.output_tokens:,}",
        )
    console.print(table)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker for the models' queues with a thread pool sized from the registry."""
    from workers.app import app
    from workers.broker import use_in_worker

    queues: list[str] = []
    concurrency = args.concurrency
    if args.model:
        specs = resolve_models(args.model)
        queues = [spec.queue for spec in specs]
        concurrency = concurrency or sum(spec.concurrency for spec in specs)
        name = "+".join(spec.queue.removeprefix("ibt.model.") for spec in specs)
    elif not args.collect_only:
        raise InputError("give -m MODEL (or --collect-only)", source="ibt worker")
    else:
        name = "collect"
    if args.collect_only or not args.no_collect:
        queues.append(COLLECT_QUEUE)
    argv = [
        "worker",
        "--queues",
        ",".join(queues),
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency or 4),
        "--hostname",
        args.hostname or f"{name}@%h",
        "--loglevel",
        args.loglevel,
        "--without-mingle",
    ]
    if args.events:
        argv.append("--task-events")
    use_in_worker(app)
    app.worker_main(argv)
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    """Live workers per model queue, from Celery's broadcast inspect."""
    from rich.table import Table

    app = _remote_app()
    inspect = app.control.inspect(timeout=args.timeout)
    queues = inspect.active_queues() or {}
    stats = inspect.stats() or {}
    active = inspect.active() or {}
    table = Table(title=f"workers on {app.conf.broker_url.split('@')[-1]}")
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
        return 1
    return 0


def cmd_flower(args: argparse.Namespace) -> int:
    """Flower on our app (``celery -A workers flower`` works too)."""
    from workers.app import app

    argv = ["flower", f"--port={args.port}", *args.extra]
    app.start(argv)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from producer.report import run_report

    return run_report(args.results, args.png, args.prices or get_settings().models_file)


def cmd_select(args: argparse.Namespace) -> int:
    from producer.curate import run_select

    return run_select(args.results, min_score=args.min_score, agg=args.agg, output=args.output)


def cmd_simulator(args: argparse.Namespace) -> int:
    from producer import simulator

    return int(simulator.main(args.extra) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibt", description="Score instruction/answer pairs with LLM judges on Celery."
    )
    parser.add_argument("--models-file", help="TOML file defining models (env IBT_MODELS_FILE)")
    parser.add_argument("--prompt-file", help="judge prompt template (env IBT_PROMPT_FILE)")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score a file of pairs with one or more judge models")
    score.add_argument("input", help="JSON array, JSON Lines or CSV file; - for stdin")
    score.add_argument("-m", "--model", action="append", required=True, help="judge model (repeat)")
    score.add_argument("-o", "--output", help="output .json or .jsonl (default: stdout)")
    score.add_argument("--no-wait", action="store_true", help="print the job id and return")
    score.add_argument("-q", "--quiet", action="store_true", help="no live progress display")
    score.add_argument(
        "--no-cache", action="store_true", help="call the provider even for cached verdicts"
    )
    mode = score.add_mutually_exclusive_group()
    mode.add_argument(
        "--structured",
        dest="structured",
        action="store_true",
        default=None,
        help="ask every judge for a JSON verdict (OpenAI json_schema, Anthropic tool call)",
    )
    mode.add_argument(
        "--text",
        dest="structured",
        action="store_false",
        help="ask every judge for a free-text verdict ending in 'Score: N'",
    )
    score.add_argument(
        "--resume", metavar="JOB", help="finish an interrupted job: only missing items are paid"
    )
    score.set_defaults(func=cmd_score)

    demo = sub.add_parser("demo", help="score the example pairs (simulated judges without keys)")
    demo.add_argument("-o", "--output", help="output .json or .jsonl (default: stdout)")
    demo.set_defaults(func=cmd_demo)

    result = sub.add_parser("result", help="fetch a finished job's list")
    result.add_argument("job")
    result.add_argument("-o", "--output")
    result.set_defaults(func=cmd_result)

    status = sub.add_parser("status", help="show a job's progress per model")
    status.add_argument("job")
    status.set_defaults(func=cmd_status)

    worker = sub.add_parser("worker", help="run a worker for one or more models' queues")
    worker.add_argument("-m", "--model", action="append", help="model whose queue to serve")
    worker.add_argument("-c", "--concurrency", type=int, help="threads (default: registry)")
    worker.add_argument("--no-collect", action="store_true", help="do not serve the callback queue")
    worker.add_argument("--collect-only", action="store_true", help="serve only the callback queue")
    worker.add_argument("--hostname", help="Celery node name (default MODEL@HOST)")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument(
        "--events",
        action="store_true",
        help="send task events from the start (Flower also switches them on by itself)",
    )
    worker.set_defaults(func=cmd_worker)

    report = sub.add_parser("report", help="statistics and agreement of a results file")
    report.add_argument("results", help="a .json or .jsonl written by ibt score")
    report.add_argument("--png", metavar="DIR", help="also write plots to DIR")
    report.add_argument("--prices", help="TOML with per-model prices (default: models file)")
    report.set_defaults(func=cmd_report)

    select = sub.add_parser("select", help="keep the pairs the judges scored high enough")
    select.add_argument("results", help="a .json or .jsonl written by ibt score")
    select.add_argument("--min-score", type=int, required=True, choices=range(1, 6))
    select.add_argument("--agg", choices=["mean", "median", "min", "all"], default="mean")
    select.add_argument("-o", "--output", help="curated .jsonl or .json (default: stdout)")
    select.set_defaults(func=cmd_select)

    workers = sub.add_parser("workers", help="list live workers per model queue")
    workers.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for replies")
    workers.set_defaults(func=cmd_workers)

    flower = sub.add_parser("flower", help="run Flower on the cluster (other options go to it)")
    flower.add_argument("--port", type=int, default=5555)
    flower.set_defaults(func=cmd_flower)

    sim = sub.add_parser("simulator", help="run the simulated provider server", add_help=False)
    sim.set_defaults(func=cmd_simulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # ``flower`` and ``simulator`` pass every option they do not know to the tool they run.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in PASS_THROUGH:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        _apply_config_flags(args)
        return int(args.func(args))
    except InputError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except IbtError as exc:
        console.print(f"[bold red]failed:[/] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
