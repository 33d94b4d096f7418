"""Shared pieces of the benchmarks: a throw-away cluster and CPU/memory readings from /proc."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench.names import KEY, MODELS  # noqa: F401 - re-exported to the benchmarks
from producer.local import ValkeyProcess, worker_argv
from producer.processes import child_env, spawn, stop
from producer.simulator_process import SimulatorProcess
from workers.app import create_app

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class BenchCluster:
    valkey: ValkeyProcess
    simulator: SimulatorProcess
    app: Celery
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def worker_cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.workers)

    def valkey_peak_mb(self) -> float:
        info: dict[str, Any] = redis.Redis.from_url(self.valkey.url).info("memory")  # type: ignore[assignment]
        return float(info["used_memory_peak"]) / 2**20


@contextmanager
def cluster(
    *,
    latency: float,
    concurrency: int,
    procs: int = 1,
    models: Sequence[str] = MODELS,
    worker_command: Sequence[str] | None = None,
    env_extra: dict[str, str] | None = None,
) -> Iterator[BenchCluster]:
    """Valkey (no persistence), the simulator, ``procs`` worker processes per model."""
    tmp = Path(tempfile.mkdtemp(prefix="ibt-bench-"))
    valkey = ValkeyProcess(tmp / "valkey", appendonly=False)
    valkey.start()
    sim = SimulatorProcess(latency=latency, api_key=KEY)
    sim.start()
    env = child_env(
        IBT_BROKER_URL=valkey.url,
        IBT_HOME=str(tmp),
        IBT_LOG_LEVEL="WARNING",
        OPENAI_API_KEY=KEY,
        ANTHROPIC_API_KEY=KEY,
        OPENAI_BASE_URL=sim.openai_base_url,
        ANTHROPIC_BASE_URL=sim.anthropic_base_url,
        **(env_extra or {}),
    )
    bench = BenchCluster(valkey, sim, create_app(valkey.url))
    try:
        for model in models:
            for n in range(procs):
                argv = (
                    list(worker_command)
                    if worker_command
                    else worker_argv([model], concurrency=concurrency, hostname=f"{model}-{n}@%h")
                )
                bench.workers.append(spawn(argv, env=env, log_path=tmp / f"{model}-{n}.log"))
        deadline = time.monotonic() + 60
        while len(bench.app.control.ping(timeout=0.5)) < len(bench.workers):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
        yield bench
    finally:
        for process in bench.workers:
            stop(process)
        bench.app.pool.force_close_all()
        sim.stop()
        valkey.stop()
