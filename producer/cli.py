"""The ``ibt`` command line: parse arguments, then run the command (producer/commands.py).

Only the standard library and light modules are imported here, so ``ibt --help`` and a
mistyped flag answer at once; a command's heavy imports happen when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from producer import outcome
from workers.errors import IbtError, InputError
from workers.settings import get_settings, mask_url

PASS_THROUGH = ("flower", "simulator")


def _apply_config_flags(args: argparse.Namespace) -> None:
    """Flags override the matching variables; children (embedded workers) inherit them."""
    for flag, variable in (("models_file", "IBT_MODELS_FILE"), ("prompt_file", "IBT_PROMPT_FILE")):
        value = getattr(args, flag, None)
        if value:
            if not Path(value).is_file():
                raise InputError("no such file", source=value, field=f"--{flag.replace('_', '-')}")
            os.environ[variable] = str(Path(value).resolve())
    get_settings.cache_clear()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ibt")
    except PackageNotFoundError:
        return "unknown"


def _config_flags(*, suppress: bool) -> argparse.ArgumentParser:
    """--models-file and --prompt-file, accepted before the subcommand and after it."""
    flags = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else None
    flags.add_argument(
        "--models-file", default=default, help="TOML file defining models (env IBT_MODELS_FILE)"
    )
    flags.add_argument(
        "--prompt-file", default=default, help="judge prompt template (env IBT_PROMPT_FILE)"
    )
    return flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibt",
        description="Score instruction/answer pairs with LLM judges on Celery.",
        parents=[_config_flags(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"ibt {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    config = [_config_flags(suppress=True)]
    commands: dict[str, argparse.ArgumentParser] = {}
    parser.set_defaults(subparsers=commands)

    score = sub.add_parser(
        "score", help="score a file of pairs with one or more judge models", parents=config
    )
    score.add_argument("input", help="JSON array, JSON Lines, CSV or Parquet file; - for stdin")
    score.add_argument("-m", "--model", action="append", required=True, help="judge model (repeat)")
    score.add_argument("-o", "--output", help="output .json, .jsonl or .parquet (default: stdout)")
    score.add_argument(
        "--map",
        action="append",
        metavar="FIELD=COLUMN[,COLUMN]",
        help="read instruction or generation from other columns, e.g. Alpaca's "
        "--map instruction=instruction,input --map generation=output (repeat)",
    )
    score.add_argument(
        "--window",
        type=int,
        metavar="W",
        help="at most W tasks per model queued or in flight (default: 20 per worker "
        "thread, at least 2000)",
    )
    score.add_argument(
        "--force", action="store_true", help="allow -o to overwrite one of the input files"
    )
    score.add_argument(
        "--drop-extra-fields",
        action="store_true",
        help="write only the documented keys (by default other input fields, e.g. id, are "
        "carried to each output record)",
    )
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
    score.add_argument(
        "--dry-run",
        action="store_true",
        help="validate everything and print the requests, tokens and cost per model; "
        "nothing is enqueued and no provider is called",
    )
    score.add_argument(
        "--batch",
        action="store_true",
        help="send every model's items through its provider's Batch API (half price, "
        "results within 24 h)",
    )
    score.add_argument(
        "--samples",
        type=int,
        default=1,
        metavar="N",
        help="self-consistency: ask each judge N times per pair (at temperature 0.7 unless "
        "the models file gives one above 0) and keep the median; records add 'samples'",
    )
    score.add_argument(
        "--max-cost",
        type=float,
        metavar="USD",
        help="hard cap on what the job may spend, across every worker; calls it cannot cover "
        "become error records of kind 'budget'",
    )
    score.set_defaults(func="score")

    demo = sub.add_parser(
        "demo", help="score the example pairs (simulated judges without keys)", parents=config
    )
    demo.add_argument("-o", "--output", help="output .json or .jsonl (default: stdout)")
    demo.set_defaults(func="demo")

    result = sub.add_parser("result", help="fetch a finished job's list")
    result.add_argument("job")
    result.add_argument("-o", "--output", help="output .json, .jsonl or .parquet (default: stdout)")
    result.add_argument(
        "--follow",
        action="store_true",
        help="write rows as they finish (in input order) until the job is done; rows written "
        "leave Redis; run it again to resume after a crash",
    )
    result.set_defaults(func="result")

    cancel = sub.add_parser("cancel", help="stop a job's spending: queued items are not sent")
    cancel.add_argument("job")
    cancel.set_defaults(func="cancel")

    status = sub.add_parser("status", help="show a job's progress per model")
    status.add_argument("job")
    status.set_defaults(func="status")

    worker = sub.add_parser(
        "worker", help="run a worker for one or more models' queues", parents=config
    )
    worker.add_argument("-m", "--model", action="append", help="model whose queue to serve")
    worker.add_argument("-c", "--concurrency", type=int, help="threads (default: registry)")
    worker.add_argument("--no-collect", action="store_true", help="do not serve the callback queue")
    worker.add_argument("--collect-only", action="store_true", help="serve only the callback queue")
    worker.add_argument("--hostname", help="Celery node name (default MODEL@HOST)")
    worker.add_argument(
        "--loglevel",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    )
    worker.add_argument(
        "--events",
        action="store_true",
        help="send task events from the start (Flower also switches them on by itself)",
    )
    worker.set_defaults(func="worker")

    report = sub.add_parser(
        "report", help="statistics and agreement of a results file", parents=config
    )
    report.add_argument("results", help="a .json or .jsonl written by ibt score")
    report.add_argument("--png", metavar="DIR", help="also write plots to DIR")
    report.add_argument("--prices", help="TOML with per-model prices (default: models file)")
    report.add_argument(
        "--json",
        action="store_true",
        help="print the report as one JSON object (same numbers, unrounded) instead of tables",
    )
    report.add_argument(
        "--gold",
        metavar="GOLD",
        help="human scores ({instruction, generation, score} rows; JSON, JSON Lines or "
        "Parquet) to calibrate each judge against",
    )
    report.set_defaults(func="report")

    select = sub.add_parser("select", help="keep the pairs the judges scored high enough")
    select.add_argument("results", help="a .json or .jsonl written by ibt score")
    chosen = select.add_mutually_exclusive_group()
    chosen.add_argument("--min-score", type=int, choices=range(1, 6))
    chosen.add_argument(
        "--disagreement",
        type=int,
        metavar="D",
        choices=range(1, 5),
        help="instead: write the pairs whose judges' scores differ by D or more, with every "
        "judge's score and reasoning, for review",
    )
    select.add_argument("--gold", metavar="GOLD", help="human scores to measure precision on")
    select.add_argument(
        "--target-precision",
        type=float,
        metavar="P",
        help="with --gold: recommend the smallest K whose precision on the gold pairs is >= P "
        "(0..1), and select at it unless --min-score is given",
    )
    select.add_argument(
        "--human-min",
        type=int,
        default=4,
        choices=range(1, 6),
        help="with --target-precision: the human score a pair needs to count as wanted (default 4)",
    )
    select.add_argument(
        "--agg",
        choices=["mean", "median", "min", "all"],
        default="mean",
        help="how a pair's scores are combined before the >= K test: mean (default), median, "
        "or min (the lowest: every judge that scored the pair gave >= K); all is an alias of "
        "min. Judges with an error record on a pair are left out for every choice",
    )
    select.add_argument(
        "-o",
        "--output",
        help="curated .jsonl or .json, each pair with its scores (default: stdout)",
    )
    select.set_defaults(func="select")

    reparse = sub.add_parser(
        "reparse", help="re-read a results file's unparseable replies with today's parser"
    )
    reparse.add_argument("results", help="a .json or .jsonl written by ibt score")
    reparse.add_argument(
        "-o", "--output", help="the fixed .json or .jsonl (default: stdout); no provider is called"
    )
    reparse.set_defaults(func="reparse")

    workers = sub.add_parser("workers", help="list live workers per model queue")
    workers.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for replies")
    workers.set_defaults(func="workers")

    flower = sub.add_parser("flower", help="run Flower on the cluster (other options go to it)")
    flower.add_argument("--port", type=int, default=5555)
    flower.set_defaults(func="flower")

    sim = sub.add_parser("simulator", help="run the simulated provider server", add_help=False)
    sim.set_defaults(func="simulator")
    commands.update(sub.choices)
    return parser


def _unknown_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]
) -> str:
    """argparse's complaint, with a "did you mean" for each mistyped option."""
    import difflib

    command = args.subparsers.get(args.command, parser)
    known = [o for action in command._actions for o in action.option_strings]
    known += [o for action in parser._actions for o in action.option_strings]
    parts = []
    for token in extra:
        option = token.split("=", 1)[0]
        close = (
            difflib.get_close_matches(option, known, n=1, cutoff=0.6)
            if option.startswith("-")
            else []
        )
        parts.append(f"{token} (did you mean {close[0]}?)" if close else token)
    return f"unrecognized arguments: {' '.join(parts)}"


def _say(kind: str, message: object) -> None:
    """One line on stderr; any password in a URL inside it is masked."""
    from producer.progress import console

    console.print(f"[bold red]{kind}:[/] {mask_url(str(message))}", highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # ``flower`` and ``simulator`` pass every option they do not know to the tool they run.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in PASS_THROUGH:
        parser.error(_unknown_arguments(parser, args, extra))
    args.extra = extra
    args.argv = argv
    try:
        _apply_config_flags(args)
        return int(_command(args.func)(args))
    except InputError as exc:
        _say("error", exc)
        return outcome.BAD_INPUT
    except IbtError as exc:
        from producer.connection import BrokerUnavailable

        _say("error" if isinstance(exc, BrokerUnavailable) else "failed", exc)
        return outcome.FAILED
    except KeyboardInterrupt:
        return outcome.INTERRUPTED
    except BrokenPipeError:
        # A reader that stopped early (`| head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return outcome.BROKEN_PIPE
    except Exception as exc:
        if not _is_broker_error(exc):
            raise
        from producer.connection import describe

        url = get_settings().broker_url or ""
        _say("failed", f"lost the broker {url}: {describe(exc)}")
        return outcome.FAILED


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    """The body of command ``name``; ``ibt worker`` imports worker-side modules only."""
    if name == "worker":
        from workers.lean_imports import skip_unused_optional_imports

        skip_unused_optional_imports()
        from workers.serve import cmd_worker

        return cmd_worker
    from producer import commands

    return getattr(commands, f"cmd_{name}")  # type: ignore[no-any-return]


def _is_broker_error(exc: BaseException) -> bool:
    import redis
    from kombu.exceptions import OperationalError

    return isinstance(exc, redis.exceptions.RedisError | OperationalError)


def run() -> None:
    """The ``ibt`` console script (and ``python -m producer.cli``): ``main``, then an exit
    that skips the interpreter's teardown (workers/quick_exit.py)."""
    from workers.quick_exit import quick_exit

    quick_exit(main())


if __name__ == "__main__":
    run()
