"""Benchmark 3: how fast ``ibt score`` enqueues, and what it holds in memory.

    uv run python -m bench.submit --pairs 100000

Loads a JSONL file of N pairs through the real input loader, then submits N x 2 tasks to a
fresh Valkey with no worker consuming. Prints tasks/s, the producer's peak RSS and Valkey's
memory (the queued messages).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import MODELS
from producer import job as jobs
from producer.inputs import load_pairs
from producer.local import ValkeyProcess
from workers.app import create_app
from workers.models import ModelRegistry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=20000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ibt-bench-submit-"))
    source = tmp / "pairs.jsonl"
    with source.open("w") as handle:
        for i in range(args.pairs):
            record = {
                "instruction": f"Instruction {i}: " + "explain this " * 8,
                "generation": f"Answer {i}: " + "a sentence of the answer " * 20,
            }
            handle.write(json.dumps(record) + "\n")
    valkey = ValkeyProcess(tmp / "valkey", appendonly=False)
    valkey.start()
    try:
        app = create_app(valkey.url)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.perf_counter()
        pairs = load_pairs(str(source))
        loaded = time.perf_counter()
        jobs.submit(app, pairs, ModelRegistry().resolve_all(MODELS), use_cache=False)
        done = time.perf_counter()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        memory: dict[str, Any] = redis.Redis.from_url(valkey.url).info("memory")  # type: ignore[assignment]
        tasks = 2 * args.pairs
        print(
            f"{args.pairs} pairs x 2 models = {tasks} tasks, "
            f"input {source.stat().st_size / 2**20:.0f} MB"
        )
        print(f"load + validate   {loaded - started:6.2f} s")
        print(f"enqueue           {done - loaded:6.2f} s  = {tasks / (done - loaded):,.0f} tasks/s")
        print(f"producer peak RSS {rss:6.0f} MB (before: {rss0:.0f} MB)")
        print(
            f"valkey used       {memory['used_memory'] / 2**20:6.0f} MB "
            f"({memory['used_memory'] / tasks:,.0f} bytes/task queued)"
        )
    finally:
        valkey.stop()


if __name__ == "__main__":
    main()
