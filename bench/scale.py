"""Benchmark 4: a 100,000-pair x 2-model job end to end, and the memory of every process.

    uv run python -m bench.scale --pairs 100000

The producer is the real ``ibt score`` command (a child process, remote mode: it reads the
JSON Lines file, enqueues, follows progress and streams the output file); one worker process
per model; the simulator answers at latency 0. Prints the wall time, what the output holds
(every row, in input order), and peak memory: the producer's max RSS, each worker's VmHWM,
Valkey's peak ``used_memory`` and its RSS high-water mark.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import KEY, MODELS, cluster, peak_rss_mb
from producer.processes import child_env


def write_input(path: Path, pairs: int) -> None:
    with path.open("w") as handle:
        for i in range(pairs):
            record = {
                "instruction": f"Instruction {i}: " + "explain this " * 8,
                "generation": f"Answer {i}: " + "a sentence of the answer " * 20,
            }
            handle.write(json.dumps(record) + "\n")


def check_output(path: Path, pairs: int) -> dict[str, int]:
    """Rows, scored rows, error rows, and rows out of input order (must be 0)."""
    rows = scored = errors = misplaced = 0
    with path.open() as handle:
        for position, line in enumerate(handle):
            record = json.loads(line)
            rows += 1
            scored += record["score"] is not None
            errors += "error" in record
            expected = (f"Instruction {position // len(MODELS)}: ", MODELS[position % len(MODELS)])
            misplaced += not (
                record["instruction"].startswith(expected[0]) and record["model"] == expected[1]
            )
    return {"rows": rows, "scored": scored, "errors": errors, "misplaced": misplaced}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32, help="threads per worker")
    args = parser.parse_args()
    with cluster(latency=0.0, concurrency=args.concurrency) as bench:
        workdir = Path(bench.valkey.data_dir).parent
        source, output = workdir / "pairs.jsonl", workdir / "scored.jsonl"
        write_input(source, args.pairs)
        env = child_env(
            IBT_BROKER_URL=bench.valkey.url,
            IBT_LOG_LEVEL="WARNING",
            OPENAI_API_KEY=KEY,
            ANTHROPIC_API_KEY=KEY,
            OPENAI_BASE_URL=bench.simulator.openai_base_url,
            ANTHROPIC_BASE_URL=bench.simulator.anthropic_base_url,
        )
        command = [sys.executable, "-m", "producer.cli", "score", str(source), "--quiet"]
        for model in MODELS:
            command += ["-m", model]
        command += ["--no-cache", "-o", str(output)]
        started = time.perf_counter()
        log = (workdir / "producer.log").open("w")
        producer = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        producer.wait()
        wall = time.perf_counter() - started
        # The producer is the only child waited for so far: its max RSS is this figure.
        producer_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        log.close()
        if producer.returncode != 0:
            tail = (workdir / "producer.log").read_text()[-2000:]
            raise SystemExit(f"ibt score exited {producer.returncode}:\n{tail}")
        # Workers and Valkey still run; VmHWM is their high-water mark so far.
        worker_peaks = [peak_rss_mb(worker.pid) for worker in bench.workers]
        info: dict[str, Any] = redis.Redis.from_url(bench.valkey.url).info("memory")  # type: ignore[assignment]
        valkey_used_peak = float(info["used_memory_peak"]) / 2**20
        valkey_rss_peak = peak_rss_mb(bench.valkey.process.pid) if bench.valkey.process else 0.0
        found = check_output(output, args.pairs)
        input_mb = os.path.getsize(source) / 2**20
        output_mb = os.path.getsize(output) / 2**20
    tasks = args.pairs * len(MODELS)
    print(
        f"{args.pairs} pairs x {len(MODELS)} models = {tasks} tasks, latency 0, "
        f"1 worker process x {args.concurrency} threads per model"
    )
    print(f"input {input_mb:.0f} MB, output {output_mb:.0f} MB")
    print(f"wall time           {wall:8.1f} s  ({tasks / wall:,.0f} tasks/s, all of ibt score)")
    print(
        f"output rows         {found['rows']:8d}  scored {found['scored']}, errors "
        f"{found['errors']}, out of order {found['misplaced']}"
    )
    print(f"producer peak RSS   {producer_mb:8.0f} MB")
    for number, peak in enumerate(worker_peaks):
        print(f"worker {number} peak RSS   {peak:6.0f} MB")
    print(
        f"valkey peak used    {valkey_used_peak:8.0f} MB  ({valkey_used_peak * 2**20 / tasks:,.0f}"
        f" bytes/task), peak RSS {valkey_rss_peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
