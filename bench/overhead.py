"""Benchmark 2: at latency 0, ibt's calls/s against a bare Celery chord of no-op tasks.

    uv run python -m bench.overhead --pairs 2000

Same broker kind, same pool (threads) and concurrency, same number of tasks, one worker
process each. The ratio is what our per-task work (prompt, SDK call, parsing, cache, job
state) costs relative to Celery's own floor.
"""

from __future__ import annotations

import argparse
import sys
import time

from celery import chord

from bench.common import MODELS, cluster
from producer import job as jobs
from producer.inputs import Pair
from workers.models import ModelRegistry


def ours(pairs: int, concurrency: int) -> tuple[float, float]:
    with cluster(latency=0.0, concurrency=concurrency, models=MODELS[:1]) as bench:
        items = [Pair(f"overhead question {i}", f"answer {i}") for i in range(pairs)]
        cpu0, started = bench.worker_cpu(), time.perf_counter()
        job = jobs.submit(
            bench.app, items, ModelRegistry().resolve_all(MODELS[:1]), use_cache=False
        )
        jobs.wait(bench.app, job, poll_interval=0.1)
        return time.perf_counter() - started, bench.worker_cpu() - cpu0


def bare(tasks: int, concurrency: int) -> tuple[float, float]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.noop_app",
        "worker",
        "-P",
        "threads",
        "-c",
        str(concurrency),
        "-Q",
        "bench.noop",
        "--without-mingle",
        "-l",
        "WARNING",
    ]
    with cluster(
        latency=0.0, concurrency=concurrency, models=["noop"], worker_command=command
    ) as bench:
        from bench import noop_app

        noop_app.app.conf.broker_url = bench.valkey.url
        noop_app.app.conf.result_backend = bench.valkey.url
        cpu0, started = bench.worker_cpu(), time.perf_counter()
        result = chord(noop_app.noop.s({"i": i}) for i in range(tasks))(noop_app.done.s())
        count = result.get(timeout=600, follow_parents=False)
        assert count == tasks
        return time.perf_counter() - started, bench.worker_cpu() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    rows = {
        "ibt": ours(args.pairs, args.concurrency),
        "bare Celery": bare(args.pairs, args.concurrency),
    }
    print(f"{args.pairs} tasks, latency 0, 1 worker process, {args.concurrency} threads")
    print(f"{'':<12}{'tasks/s':>9}{'CPU ms/task':>13}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:<12}{args.pairs / wall:>9.0f}{1000 * cpu / args.pairs:>13.2f}")
    print(f"ibt / bare Celery: {rows['bare Celery'][0] / rows['ibt'][0]:.2f}")


if __name__ == "__main__":
    main()
