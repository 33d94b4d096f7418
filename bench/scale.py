"""Benchmark 4 (issue 12): whole jobs end to end at several sizes, and every process's memory.

    uv run python -m bench.scale --pairs 50000 500000        # 100,000 and 1,000,000 tasks

For each size, in one run: a fresh Valkey, simulator (latency 0) and one worker process per
model; the producer is the real ``ibt score`` command (a child process, cluster mode: it
validates the JSON Lines file in one pass, feeds the window, and streams the output while
the job runs). Prints a table: wall time and tasks/s of the whole command, what the output
holds (every row, in input order), the producer's peak RSS, each worker's VmHWM, Valkey's
peak ``used_memory`` and bytes per task of the window; then each figure at the largest size
as a ratio of the smallest (the targets: memory within 15%, throughput at least 90%).
"""

from __future__ import annotations

import argparse
import json
import os
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


def run_size(pairs: int, concurrency: int, window: int | None) -> dict[str, Any]:
    with cluster(latency=0.0, concurrency=concurrency) as bench:
        workdir = Path(bench.valkey.data_dir).parent
        source, output = workdir / "pairs.jsonl", workdir / "scored.jsonl"
        write_input(source, pairs)
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
        if window:
            command += ["--window", str(window)]
        started = time.perf_counter()
        log = (workdir / "producer.log").open("w")
        producer = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(producer.pid, 0)
        wall = time.perf_counter() - started
        log.close()
        if status != 0:
            tail = (workdir / "producer.log").read_text()[-2000:]
            raise SystemExit(f"ibt score exited {status}:\n{tail}")
        # Workers and Valkey still run; VmHWM is their high-water mark so far.
        worker_peaks = [peak_rss_mb(worker.pid) for worker in bench.workers]
        info: dict[str, Any] = redis.Redis.from_url(bench.valkey.url).info("memory")  # type: ignore[assignment]
        found = check_output(output, pairs)
        return {
            "pairs": pairs,
            "tasks": pairs * len(MODELS),
            "wall": wall,
            "producer": usage.ru_maxrss / 1024,
            "workers": worker_peaks,
            "valkey": float(info["used_memory_peak"]) / 2**20,
            "valkey_start": float(info["used_memory_startup"]) / 2**20,
            "input_mb": os.path.getsize(source) / 2**20,
            **found,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, nargs="+", default=[50_000, 500_000])
    parser.add_argument("--concurrency", type=int, default=32, help="threads per worker")
    parser.add_argument("--window", type=int, help="--window for ibt score (default: its own)")
    args = parser.parse_args()
    window = args.window or max(2000, 20 * args.concurrency)
    print(
        f"latency 0, 1 worker process x {args.concurrency} threads per model, "
        f"window {window} tasks per model\n"
    )
    print(
        "| tasks | input MB | wall s | tasks/s | rows | out of order | errors | producer peak "
        "RSS MB | worker peak RSS MB | Valkey peak used MB | Valkey bytes/window task |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for pairs in args.pairs:
        r = run_size(pairs, args.concurrency, args.window)
        results.append(r)
        per_task = (r["valkey"] - r["valkey_start"]) * 2**20 / (window * len(MODELS))
        print(
            f"| {r['tasks']:,} | {r['input_mb']:.0f} | {r['wall']:.1f} | "
            f"{r['tasks'] / r['wall']:,.0f} | {r['rows']:,} | {r['misplaced']} | {r['errors']} | "
            f"{r['producer']:.0f} | {' / '.join(f'{w:.0f}' for w in r['workers'])} | "
            f"{r['valkey']:.0f} | {per_task:,.0f} |",
            flush=True,
        )
    if len(results) > 1:
        small, large = results[0], results[-1]
        print(f"\nlargest / smallest ({large['tasks']:,} vs {small['tasks']:,} tasks):")
        rate = (large["tasks"] / large["wall"]) / (small["tasks"] / small["wall"])
        print(f"  throughput      {rate:.2f}x")
        print(f"  producer RSS    {large['producer'] / small['producer']:.2f}x")
        for n, (a, b) in enumerate(zip(small["workers"], large["workers"], strict=True)):
            print(f"  worker {n} RSS    {b / a:.2f}x")
        print(f"  Valkey peak     {large['valkey'] / small['valkey']:.2f}x")


if __name__ == "__main__":
    main()
