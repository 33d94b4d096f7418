"""Benchmark 5: a shared 600 RPM budget across 4 worker processes, with and without the limiter.

    uv run python -m bench.ratelimit --minutes 2

The simulator enforces ``--rpm`` per model (sliding 60 s window, 429 + Retry-After beyond
it). With the limiter the models file says the same RPM; without it, it says nothing and
only the 429 handling (pause + Retry-After) slows the workers down.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

from producer import job as jobs
from producer.inputs import Pair
from producer.local import ValkeyProcess, worker_argv
from producer.processes import child_env, spawn, stop
from producer.simulator_process import SimulatorProcess
from workers.app import create_app
from workers.models import ModelRegistry

MODEL = "gpt-ratelimited"


def run(limited: bool, rpm: int, minutes: float, workers: int, latency: float) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="ibt-bench-rl-"))
    models = tmp / "models.toml"
    body = f'[models."{MODEL}"]\nprovider = "openai"\nconcurrency = 16\nmax_retries = 50\n'
    if limited:
        body += f"rpm = {rpm}\n"
    models.write_text(body)
    valkey = ValkeyProcess(tmp / "valkey", appendonly=False)
    valkey.start()
    sim = SimulatorProcess(latency=latency, rpm=rpm, api_key="bench-key")
    sim.start()
    env = child_env(
        IBT_BROKER_URL=valkey.url,
        IBT_MODELS_FILE=str(models),
        OPENAI_API_KEY="bench-key",
        OPENAI_BASE_URL=sim.openai_base_url,
        IBT_RETRY_BACKOFF_MAX="10",
    )
    procs = [
        spawn(worker_argv([MODEL], hostname=f"rl{i}@%h"), env=env, log_path=tmp / f"w{i}.log")
        for i in range(workers)
    ]
    app = create_app(valkey.url)
    try:
        count = int(rpm * minutes * 1.5) + 100
        pairs = [Pair(f"rate {limited} {i}", f"answer {i}") for i in range(count)]
        spec = ModelRegistry.load(str(models)).resolve_all([MODEL])
        started = time.time()
        jobs.submit(app, pairs, spec, use_cache=False)
        window_end = started + 30 + minutes * 60
        while time.time() < window_end:
            time.sleep(1)
        log = sim.stats()["log"]
    finally:
        for process in procs:
            process.terminate()
        for process in procs:
            stop(process)
        app.pool.force_close_all()
        sim.stop()
        valkey.stop()
    # Measure a steady window: skip the first 30 s (workers starting, first window filling).
    lo, hi = started + 30, started + 30 + minutes * 60
    inside = [e for e in log if lo <= e["t"] < hi]
    statuses = collections.Counter(e["status"] for e in inside)
    achieved = statuses[200] / minutes
    return {
        "ok_per_min": achieved,
        "share_of_budget": achieved / rpm,
        "429s": float(statuses[429]),
        "requests": float(len(inside)),
        "429s_whole_run": float(sum(e["status"] == 429 for e in log)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    print(f"simulator: {args.rpm} RPM per model; {args.workers} worker processes x 16 threads;")
    print(f"window: {args.minutes:g} min after a 30 s warm-up; latency {args.latency:g}s\n")
    print(
        f"{'limiter':<10}{'200/min':>10}{'% of RPM':>10}{'429s':>8}{'requests':>10}"
        f"{'429s, whole run':>17}"
    )
    for limited in (True, False):
        row = run(limited, args.rpm, args.minutes, args.workers, args.latency)
        print(
            f"{'on' if limited else 'off':<10}{row['ok_per_min']:>10.0f}"
            f"{100 * row['share_of_budget']:>9.1f}%{row['429s']:>8.0f}{row['requests']:>10.0f}"
            f"{row['429s_whole_run']:>17.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
