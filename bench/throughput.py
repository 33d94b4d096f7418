"""Benchmark 1: calls/s and CPU per call, ours vs the asyncio peer vs the ideal, one run.

    uv run python -m bench.throughput --pairs 5000 --latency 1.0
    uv run python -m bench.throughput --pairs 10000 --latency 0.2

N pairs x 2 models (OpenAI and Anthropic protocol) against the simulator, C concurrent calls
per model. Ideal calls/s = 2 x C / latency. CPU counts the worker processes (ours) or the
peer process; the simulator's CPU is in neither.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.common import MODELS, cluster
from producer import job as jobs
from producer.inputs import Pair
from workers.models import ModelRegistry


def ours(pairs: int, latency: float, concurrency: int, procs: int) -> dict[str, float]:
    with cluster(latency=latency, concurrency=concurrency // procs, procs=procs) as bench:
        items = [Pair(f"bench question {i}", f"bench answer {i}") for i in range(pairs)]
        specs = ModelRegistry().resolve_all(MODELS)
        cpu0, started = bench.worker_cpu(), time.perf_counter()
        job = jobs.submit(bench.app, items, specs, use_cache=False)
        result = jobs.wait(bench.app, job, poll_interval=0.2)
        wall = time.perf_counter() - started
        cpu = bench.worker_cpu() - cpu0
        ok = sum(r["score"] is not None for r in result.results)
    return {"calls": 2 * pairs, "ok": ok, "wall": wall, "cpu": cpu}


def peer(pairs: int, latency: float, concurrency: int) -> dict[str, float]:
    with cluster(latency=latency, concurrency=1, models=()) as bench:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.peer_asyncio",
                "--pairs",
                str(pairs),
                "--concurrency",
                str(concurrency),
                "--openai",
                bench.simulator.openai_base_url,
                "--anthropic",
                bench.simulator.anthropic_base_url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--procs", type=int, default=1, help="worker processes per model")
    args = parser.parse_args()
    ideal = 2 * args.concurrency / args.latency
    rows = {
        "ibt": ours(args.pairs, args.latency, args.concurrency, args.procs),
        "asyncio peer": peer(args.pairs, args.latency, args.concurrency),
    }
    print(
        f"{args.pairs} pairs x 2 models, C={args.concurrency}/model, latency "
        f"{args.latency}s, ideal {ideal:.0f} calls/s, {args.procs} worker process(es)/model"
    )
    print(f"{'':<14}{'calls/s':>9}{'% ideal':>9}{'CPU ms/call':>13}{'ok':>8}")
    for name, row in rows.items():
        rate = row["calls"] / row["wall"]
        print(
            f"{name:<14}{rate:>9.0f}{100 * rate / ideal:>8.1f}%"
            f"{1000 * row['cpu'] / row['calls']:>13.2f}{int(row['ok']):>8}"
        )
    ratio = (rows["ibt"]["calls"] / rows["ibt"]["wall"]) / (
        rows["asyncio peer"]["calls"] / rows["asyncio peer"]["wall"]
    )
    print(f"ibt / peer calls/s: {ratio:.2f}")


if __name__ == "__main__":
    main()
