"""Flower on our app against a real cluster, checked through its REST API."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from producer import job as jobs
from producer.inputs import Pair
from producer.processes import free_port, spawn, stop, tail
from tests.conftest import ANTHROPIC_MODEL, OPENAI_MODEL, TEST_KEY, Cluster
from workers.models import ModelRegistry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parent.parent
AUTH = "ibt:flower-test-pw"


def get(url: str, *, auth: bool = True) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(AUTH.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode()
            return response.status, json.loads(body) if body.startswith(("{", "[")) else body
    except urllib.error.HTTPError as exc:
        return exc.code, None


def poll(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def flower(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    process = spawn(
        [
            sys.executable,
            "-m",
            "producer.cli",
            "flower",
            "--port",
            str(port),
            f"--basic-auth={AUTH}",
            "--address=127.0.0.1",
        ],
        env=cluster.env(),
        log_path=log,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"flower exited:\n{tail(log)}")
        try:
            return get(url + "/api/workers", auth=False)[0] == 401
        except OSError:
            return False

    poll(up)
    yield url
    stop(process)


def test_flower_shows_workers_tasks_and_queues(cluster: Cluster, flower: str) -> None:
    # Flower sees task events only once its event consumer is live; it is when it has heard
    # every worker's heartbeat (an event too).
    def all_online() -> bool:
        status, online = get(flower + "/api/workers?status=1")
        return status == 200 and len(online) >= 2 and all(online.values())

    poll(all_online)
    pairs = [Pair(f"flower question {i}", f"flower answer {i}") for i in range(5)]
    specs = ModelRegistry().resolve_all([OPENAI_MODEL, ANTHROPIC_MODEL])
    job = jobs.submit(cluster.app, pairs, specs)
    jobs.wait(cluster.app, job, poll_interval=0.1)

    assert get(flower + "/api/tasks", auth=False)[0] == 401
    workers = poll(lambda: get(flower + "/api/workers?refresh=1")[1])
    queues_by_node = {
        node: {q["name"] for q in info.get("active_queues", [])} for node, info in workers.items()
    }
    served = set().union(*queues_by_node.values())
    assert {"ibt.model.gpt-test", "ibt.model.claude-test", "ibt.collect"} <= served

    def job_tasks() -> dict[str, Any]:
        status, tasks = get(flower + "/api/tasks?limit=1000")
        assert status == 200
        mine = {k: t for k, t in tasks.items() if k.startswith(f"ibt-{job}-")}
        return (
            mine
            if len(mine) == 11
            and all(
                t["state"] == "SUCCESS" and t.get("name") and t.get("args") for t in mine.values()
            )
            else {}
        )

    tasks = poll(job_tasks)
    score_tasks = [t for t in tasks.values() if t["name"] == "ibt.score"]
    assert len(score_tasks) == 10
    for task in score_tasks:
        # a readable summary, not the texts
        assert task["args"].startswith(f"job={job} pair="), task
        assert "flower answer" not in task["args"]
    assert any(t["name"] == "ibt.collect" for t in tasks.values())

    status, lengths = get(flower + "/api/queues/length")
    assert status == 200
    names = {q["name"] for q in lengths["active_queues"]}
    assert "ibt.model.gpt-test" in names

    for path in ("/api/workers", "/api/tasks?limit=1000", "/api/queues/length", "/broker"):
        status, body = get(flower + path)
        assert TEST_KEY not in json.dumps(body)


def test_ibt_workers_lists_each_model_queue(cluster: Cluster) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "producer.cli", "workers"],
        env=cluster.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for queue in ("ibt.model.gpt-test", "ibt.model.claude-test", "ibt.collect"):
        assert queue in done.stderr
