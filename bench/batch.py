"""Benchmark 6: batch mode against synchronous mode, same job, same simulator.

    uv run python -m bench.batch --pairs 20000

For each mode, a fresh cluster (Valkey, the simulator, one worker process per model) runs
``ibt score`` on the same 20,000 pairs x 2 models (OpenAI and Anthropic protocols), with
``--batch`` or without. Prints, per mode: wall time of the whole command, worker CPU per
item, Valkey's peak memory, and the ``--dry-run`` estimate (producer/estimate.py, what
``ibt score --dry-run`` prints) beside the cost the simulator actually served, priced at
the models file's prices (batch lines at half).

The simulator answers a synchronous call after ``--latency`` seconds and runs a batch's
lines as soon as it is read (``--batch-latency``, default 0): real batches take minutes to
hours, so the wall times say what ibt itself adds, not what a provider takes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import KEY, MODELS, cluster
from bench.scale import write_input
from producer.estimate import estimate
from producer.inputs import load_pairs
from producer.processes import child_env
from workers.models import ModelRegistry

PRICES = {"gpt-bench": (0.15, 0.60), "claude-bench": (0.80, 4.00)}


def models_file(path: Path, poll: float) -> None:
    tables = []
    for model, (price_in, price_out) in PRICES.items():
        tables.append(
            f'[models."{model}"]\n'
            f"input_price_per_mtok = {price_in}\noutput_price_per_mtok = {price_out}\n"
            f"batch_flush_seconds = {poll}\nbatch_poll_seconds = {poll}\nconcurrency = 64\n"
        )
    path.write_text("\n".join(tables))


def served_cost(stats: dict[str, Any]) -> dict[str, float]:
    """What the simulator billed, per model, at the models file's prices."""
    cost = dict.fromkeys(PRICES, 0.0)
    for entries, factor in ((stats["log"], 1.0), (stats["batch_log"], 0.5)):
        for entry in entries:
            if entry.get("status") == 200:
                price_in, price_out = PRICES[entry["model"]]
                cost[entry["model"]] += (
                    factor * (entry["in"] * price_in + entry["out"] * price_out) / 1e6
                )
    return cost


def run(mode: str, pairs: int, latency: float, batch_latency: float, poll: float) -> dict[str, Any]:
    # A models file every process reads: prices, and short flush/poll intervals.
    workdir = Path(tempfile.mkdtemp(prefix="ibt-bench-batch-"))
    settings = workdir / "models.toml"
    models_file(settings, poll)
    extra = {"IBT_MODELS_FILE": str(settings)}
    with cluster(latency=latency, concurrency=64, env_extra=extra) as bench:
        bench.simulator.configure(batch_latency=batch_latency)
        source, output = workdir / "pairs.jsonl", workdir / f"scored-{mode}.jsonl"
        write_input(source, pairs)
        specs = ModelRegistry.load(str(settings)).resolve_all(MODELS)
        estimates = estimate(load_pairs(str(source)), specs, batch=mode == "batch")
        env = child_env(
            IBT_BROKER_URL=bench.valkey.url,
            IBT_MODELS_FILE=str(settings),
            IBT_LOG_LEVEL="WARNING",
            OPENAI_API_KEY=KEY,
            ANTHROPIC_API_KEY=KEY,
            OPENAI_BASE_URL=bench.simulator.openai_base_url,
            ANTHROPIC_BASE_URL=bench.simulator.anthropic_base_url,
        )
        command = [sys.executable, "-m", "producer.cli", "score", str(source), "-q", "--no-cache"]
        for model in MODELS:
            command += ["-m", model]
        command += ["-o", str(output)] + (["--batch"] if mode == "batch" else [])
        cpu_before = bench.worker_cpu()
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{mode}: ibt score exited {done.returncode}:\n{done.stderr[-2000:]}")
        cpu = bench.worker_cpu() - cpu_before
        stats = bench.simulator.stats()
        rows = sum(1 for _ in output.open())
        return {
            "mode": mode,
            "wall": wall,
            "cpu_ms_per_item": cpu / (pairs * len(MODELS)) * 1000,
            "valkey_peak_mb": bench.valkey_peak_mb(),
            "rows": rows,
            "paid": stats["paid"],
            "duplicates": stats["duplicates"],
            "estimate": sum(e.cost(batch=e.batch) or 0.0 for e in estimates),
            "estimate_max": sum(e.cost(batch=e.batch, worst=True) or 0.0 for e in estimates),
            "served": sum(served_cost(stats).values()),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.2, help="synchronous call latency")
    parser.add_argument("--batch-latency", type=float, default=0.0)
    parser.add_argument("--poll", type=float, default=2.0, help="batch flush and poll interval")
    args = parser.parse_args()
    results = [
        run(mode, args.pairs, args.latency, args.batch_latency, args.poll)
        for mode in ("sync", "batch")
    ]
    print(
        f"{args.pairs} pairs x {len(MODELS)} models; simulator: {args.latency} s per synchronous "
        f"call, batch lines run when read (+{args.batch_latency} s); 1 worker x 64 threads "
        f"per model; batch flush/poll every {args.poll} s"
    )
    print(
        f"{'mode':6} {'wall s':>8} {'CPU ms/item':>12} {'valkey MB':>10} {'rows':>7} "
        f"{'paid sync/batch':>16} {'dup':>4} {'estimate $':>11} {'(max $)':>9} {'served $':>9}"
    )
    for r in results:
        paid = f"{r['paid']['sync']}/{r['paid']['batch']}"
        print(
            f"{r['mode']:6} {r['wall']:8.1f} {r['cpu_ms_per_item']:12.2f} "
            f"{r['valkey_peak_mb']:10.0f} {r['rows']:7d} {paid:>16} {r['duplicates']:4d} "
            f"{r['estimate']:11.4f} {r['estimate_max']:9.4f} {r['served']:9.4f}"
        )


if __name__ == "__main__":
    main()
