"""The simulator as a child process, started without importing the server (aiohttp): the
embedded stack launches it on every run, and its parent should not pay for the server's
imports."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

from producer.processes import free_port, spawn, stop


class SimulatorProcess:
    """The simulator as a child process (dies with its parent), with a small control API."""

    def __init__(self, *, latency: float = 0.0, port: int | None = None, **knobs: Any) -> None:
        self.port = port
        self.argv = [sys.executable, "-m", "producer.simulator", "--latency", str(latency)]
        if port:
            self.argv += ["--port", str(port)]
        for name, value in knobs.items():
            flag = "--" + name.replace("_", "-")
            if name == "structured":
                if not value:
                    self.argv.append("--no-structured")
            elif value is not None:
                self.argv += [flag, str(value)]
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}" if port else ""

    @classmethod
    def on_free_port(cls, *, latency: float = 0.0, **knobs: Any) -> SimulatorProcess:
        """A simulator whose URL is known before it runs, so its clients can start with it."""
        return cls(latency=latency, port=free_port(), **knobs)

    def start(self, timeout: float = 15.0) -> None:
        self.spawn()
        self.wait_listening(timeout)

    def spawn(self) -> None:
        """Start the process and return at once; ``wait_listening`` waits for its port."""
        self.process = spawn(self.argv, stdout=subprocess.PIPE)

    def wait_listening(self, timeout: float = 15.0) -> None:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith(b"listening on "):
                self.url = line.decode().split()[-1]
                return
            if not line and self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"simulator did not start: {line!r}")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def __enter__(self) -> SimulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def _call(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="GET" if data is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return dict(self._call("/_sim/stats"))

    def reset(self) -> None:
        self._call("/_sim/reset", {})

    def configure(self, **knobs: Any) -> None:
        self._call("/_sim/config", knobs)
