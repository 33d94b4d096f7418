"""Benchmark 7: whole commands, start-up included, ``ibt score`` vs the asyncio peer.

    uv run python -m bench.whole_command                      # every case, 3 runs each
    uv run python -m bench.whole_command --cases 1x1 4000x2 --runs 5
    uv run python -m bench.whole_command --ibt /tmp/before/.venv/bin/ibt   # another build

Each case is P pairs x M models against one simulator (latency 0.2 s, shared by both sides
of the case). Ours is the command a user types, ``ibt score pairs.jsonl -m ... -o out``, on
the embedded default (it starts Valkey and one worker process per model, and stops them);
the peer is ``python -m bench.peer_asyncio`` on the same file, a single process with the
async SDKs and 64 concurrent calls per model (ours: 64 worker threads per model). Wall time
is from process start to exit with the output written; CPU is the whole process tree's
(producer, workers, Valkey; the simulator's is in neither). Runs alternate ours/peer and
the table shows medians. The ``simulated`` row is ours only: ``-m simulated-openai``, where
the embedded stack also starts the simulator.

Both sides run as on a usual machine, where Python caches the bytecode it compiles: the
children get no ``PYTHONDONTWRITEBYTECODE`` (set in this project's sandbox, where every
process would otherwise compile Celery and the SDKs from source, ~2 s each), and each case
starts with one untimed run of each side. ``ibt --help`` and ``ibt --version`` are timed
too (target: 0.3 s).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.names import KEY, MODELS
from bench.scale import write_input
from producer.processes import child_env
from producer.simulator_process import SimulatorProcess

CASES = {"1x1": (1, MODELS[:1]), "1x2": (1, MODELS), "1000x2": (1000, MODELS)}
CASES["4000x2"] = (4000, MODELS)
IBT = [str(Path(sys.executable).with_name("ibt"))]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and every descendant it reaped)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {done.returncode}:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def check(path: Path, expected: int) -> None:
    rows = json.loads(path.read_text())
    scored = sum(row["score"] is not None for row in rows)
    if len(rows) != expected or scored != expected:
        raise RuntimeError(f"{path}: {len(rows)} rows, {scored} scored, expected {expected}")


def run_case(name: str, runs: int, latency: float, work: Path) -> dict[str, float]:
    pairs, models = CASES[name]
    source = work / f"{name}.jsonl"
    write_input(source, pairs)
    ours_wall, ours_cpu, peer_wall, peer_cpu = [], [], [], []
    with SimulatorProcess(latency=latency, api_key=KEY) as sim:
        for n in range(-1, runs):  # run -1 warms the bytecode caches up, untimed
            home = work / f"home-{name}-{n}"
            env = child_env(
                PYTHONDONTWRITEBYTECODE=None,
                IBT_HOME=str(home),
                IBT_BROKER_URL=None,
                IBT_LOG_LEVEL="WARNING",
                OPENAI_API_KEY=KEY,
                ANTHROPIC_API_KEY=KEY,
                OPENAI_BASE_URL=sim.openai_base_url,
                ANTHROPIC_BASE_URL=sim.anthropic_base_url,
            )
            out = work / f"ours-{name}-{n}.json"
            argv = [*IBT, "score", str(source), "-o", str(out), "-q", "--no-cache"]
            for model in models:
                argv += ["-m", model]
            wall, cpu = timed(argv, env)
            check(out, pairs * len(models))
            if n >= 0:
                ours_wall.append(wall)
                ours_cpu.append(cpu)
            out = work / f"peer-{name}-{n}.json"
            argv = [sys.executable, "-m", "bench.peer_asyncio", "--input", str(source)]
            argv += ["--output", str(out), "--concurrency", "64", "--models", *models]
            argv += ["--openai", sim.openai_base_url, "--anthropic", sim.anthropic_base_url]
            wall, cpu = timed(argv, env)
            check(out, pairs * len(models))
            if n >= 0:
                peer_wall.append(wall)
                peer_cpu.append(cpu)
    calls = pairs * len(models)
    return {
        "calls": calls,
        "ours": statistics.median(ours_wall),
        "peer": statistics.median(peer_wall),
        "ours_cpu_ms": 1000 * statistics.median(ours_cpu) / calls,
        "peer_cpu_ms": 1000 * statistics.median(peer_cpu) / calls,
        "ours_all": ours_wall,
        "peer_all": peer_wall,
    }


def simulated_cold_start(runs: int, work: Path) -> list[float]:
    source = work / "one.jsonl"
    write_input(source, 1)
    walls = []
    for n in range(runs):
        env = child_env(
            IBT_HOME=str(work / f"home-sim-{n}"), IBT_BROKER_URL=None, PYTHONDONTWRITEBYTECODE=None
        )
        out = work / f"sim-{n}.json"
        argv = [*IBT, "score", str(source), "-m", "simulated-openai", "-o", str(out), "-q"]
        walls.append(timed(argv, env)[0])
        check(out, 1)
    return walls


def light_commands(runs: int) -> dict[str, list[float]]:
    """Wall seconds of ``ibt --help`` and ``ibt --version``, ``runs`` times each."""
    env = child_env(PYTHONDONTWRITEBYTECODE=None)
    walls: dict[str, list[float]] = {"--help": [], "--version": []}
    for n in range(-1, runs):
        for flag, times in walls.items():
            wall = timed([*IBT, flag], env)[0]
            if n >= 0:
                times.append(wall)
    return walls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--ibt", help="the ibt executable to time (default: this build's)")
    args = parser.parse_args()
    if args.ibt:
        IBT[:] = [args.ibt]
    work = Path(tempfile.mkdtemp(prefix="ibt-bench-whole-"))
    print(f"{IBT[0]}: latency {args.latency} s, C = 64 per model, median of {args.runs} runs\n")
    header = "| case | calls | ibt score s | peer s | throughput ratio | ibt CPU ms/call | "
    print(header + "peer CPU ms/call | CPU ratio | ibt runs | peer runs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.cases:
        r = run_case(name, args.runs, args.latency, work)
        print(
            f"| {name} | {r['calls']} | {r['ours']:.2f} | {r['peer']:.2f} | "
            f"{r['peer'] / r['ours']:.2f} | {r['ours_cpu_ms']:.2f} | {r['peer_cpu_ms']:.2f} | "
            f"{r['ours_cpu_ms'] / r['peer_cpu_ms']:.2f} | "
            f"{' '.join(f'{w:.2f}' for w in r['ours_all'])} | "
            f"{' '.join(f'{w:.2f}' for w in r['peer_all'])} |",
            flush=True,
        )
    for flag, times in light_commands(max(args.runs, 5)).items():
        print(
            f"\nibt {flag}: median {statistics.median(times):.3f} s "
            f"({' '.join(f'{w:.3f}' for w in times)})",
            end="",
        )
    print()
    walls = simulated_cold_start(args.runs, work)
    print(
        f"\nibt score of 1 pair with -m simulated-openai (starts its own simulator): median "
        f"{statistics.median(walls):.2f} s ({' '.join(f'{w:.2f}' for w in walls)})"
    )


if __name__ == "__main__":
    main()
