"""Benchmark: a worker SIGKILLed mid-job, on the default 600 s visibility timeout.

    uv run python -m bench.recovery
    uv run python -m bench.recovery --baseline 700   # also without recovery (~10 minutes)

Valkey, the simulator (``--latency``, default 0.2 s) and two worker processes for one model
(``--concurrency`` threads each). ``--pairs`` pairs are submitted; once a quarter of them
are done, one worker is SIGKILLed with its in-flight calls. Prints how many messages it held
and, from the kill: when all of them had left kombu's ``unacked`` hash (back on their
queue), when the first of its killed calls started again on the other worker, and when the
job was done; then the rows missing or duplicated in the job's output and the calls paid
twice.

``--baseline S`` runs the same with workers whose recovery threads do not start (they still
record what they hold), waiting at most S seconds: kombu's Redis transport alone brings a
dead worker's messages back only once they are older than the visibility timeout.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import cluster
from producer import job as jobs
from producer.inputs import Pair
from workers import jobstate, recovery
from workers.models import ModelRegistry

MODEL = "gpt-bench"
VISIBILITY_TIMEOUT = "600"  # the default, stated so a developer's environment cannot change it
# Put on a worker's PYTHONPATH, this runs it without the heartbeat and monitor threads.
NO_RECOVERY = (
    "import workers.recovery\n"
    "workers.recovery.Recovery.start = lambda self: None  # bench.recovery baseline\n"
)


def held_tags(client: Any, node: str) -> list[str]:
    """The delivery tags the worker named ``node`` holds, over all its channels."""
    owners = [o for o in client.smembers(recovery.REGISTRY) if o.startswith(node)]
    return [tag for o in owners for tag in client.smembers(recovery.held_key(o))]


def run(pairs: int, latency: float, concurrency: int, *, on: bool, limit: float) -> dict[str, Any]:
    env = {"IBT_VISIBILITY_TIMEOUT": VISIBILITY_TIMEOUT}
    if not on:
        shim = Path(tempfile.mkdtemp(prefix="ibt-bench-norecovery-"))
        (shim / "sitecustomize.py").write_text(NO_RECOVERY)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))
    with cluster(
        latency=latency, concurrency=concurrency, procs=2, models=(MODEL,), env_extra=env
    ) as bench:
        client: Any = jobstate.client_for_url(bench.valkey.url)
        items = [Pair(f"recovery question {i}", f"recovery answer {i}") for i in range(pairs)]
        job = jobs.submit(bench.app, items, ModelRegistry().resolve_all([MODEL]), use_cache=False)
        victim, node = bench.workers[0], f"{MODEL}-0@"
        deadline = time.monotonic() + 60
        while True:
            progress = jobstate.progress(client, job)
            if progress is not None and progress.done >= pairs // 4 and held_tags(client, node):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the job did not get going")
            time.sleep(0.01)
        killed = time.time()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        held = held_tags(client, node)
        back = finished = None
        while time.time() - killed < limit:
            if back is None and not any(client.hmget("unacked", held)):
                back = time.time() - killed
            progress = jobstate.progress(client, job)
            if progress is not None and progress.status == "done":
                finished = time.time() - killed
                break
            time.sleep(0.05)
        rows: list[dict[str, Any]] = []
        if finished is not None:
            result = jobs.fetch(bench.app, job)
            rows = result.results if result is not None else []
        times: dict[str, list[float]] = collections.defaultdict(list)
        for entry in bench.simulator.stats()["log"]:
            times[entry["key"]].append(float(entry["t"]))
        again = sorted(t[1] - killed for t in times.values() if len(t) > 1 and t[0] < killed)
        seen = collections.Counter(r["instruction"] for r in rows)
        scored = {r["instruction"] for r in rows if r["score"] is not None}
    return {
        "held": len(held),
        "back": back,
        "first": again[0] if again else None,
        "done": finished,
        "missing": sum(1 for p in items if p.instruction not in scored) if rows else None,
        "duplicated": sum(n - 1 for n in seen.values()),
        "repeated": sum(len(t) - 1 for t in times.values()),
    }


def seconds(value: float | None, limit: float) -> str:
    return f"{value:.1f}" if value is not None else f"> {limit:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker")
    parser.add_argument("--limit", type=float, default=120, help="longest wait with recovery")
    parser.add_argument(
        "--baseline", type=float, default=0, help="also run without recovery, waiting this long"
    )
    args = parser.parse_args()
    rows = {"recovery": run(args.pairs, args.latency, args.concurrency, on=True, limit=args.limit)}
    if args.baseline:
        rows["kombu alone"] = run(
            args.pairs, args.latency, args.concurrency, on=False, limit=args.baseline
        )
    print(
        f"{args.pairs} pairs, 1 model, 2 workers x {args.concurrency} threads, latency "
        f"{args.latency}s, visibility timeout {VISIBILITY_TIMEOUT}s, heartbeat TTL "
        f"{recovery.HEARTBEAT_TTL}s, sweep every {recovery.SWEEP_SECONDS:.0f}s; one worker "
        "SIGKILLed once a quarter of the pairs were done"
    )
    header = ("", "held", "kill→back", "kill→rerun", "kill→done", "missing", "dup rows", "paid 2x")
    print(f"{header[0]:<12}" + "".join(f"{h:>11}" for h in header[1:]))
    for name, row in rows.items():
        limit = args.limit if name == "recovery" else args.baseline
        cells = [
            str(row["held"]),
            seconds(row["back"], limit),
            seconds(row["first"], limit),
            seconds(row["done"], limit),
            "?" if row["missing"] is None else str(row["missing"]),
            str(row["duplicated"]),
            str(row["repeated"]),
        ]
        print(f"{name:<12}" + "".join(f"{c:>11}" for c in cells))
    if not args.baseline:
        print(
            f"kombu alone (not run; --baseline 700 runs it): the dead worker's messages come "
            f"back once older than the visibility timeout, ~{VISIBILITY_TIMEOUT}s after the kill"
        )


if __name__ == "__main__":
    main()
