"""Every fenced code block of README.md, run as written against real parts.

The blocks are read from README.md when the tests are collected, so a new or changed block
is covered without touching this file; a block, or a bash line, that no rule here covers
fails with a message saying so. The rules, by language:

- ``json``: parses; the first one (the documented output) is a list of records with exactly
  the documented keys, in order, and a string score.
- ``toml``: loads as a models file; every model it defines resolves and passes the checks
  ``ibt score`` makes before a job starts.
- ``python``: runs as a script in an empty directory, on the embedded stack, with the
  providers' endpoints at the simulator; every verdict it got must be one simulator call.
- ``bash``: every block, in README order, line by line, in one working directory (so a file
  one block writes is read by a later one), against a password-protected Valkey and the
  simulator, in a clean environment (no ``IBT_BROKER_URL``: the embedded stack). A block that
  names judges with ``-m`` gets keys and ``*_BASE_URL`` pointing at the simulator; one that
  does not (``ibt demo``) runs keyless, on simulated judges. ``uv run X`` runs X from this
  venv (``uv run pytest`` only collects the suite: it cannot run inside itself); ``export``
  sets a variable for the lines after it, placeholders (``PASSWORD``, ``redis-host:6379``)
  replaced by the test Valkey's; ``JOB`` is the id the last ``--no-wait`` line printed, and
  that job is awaited (its block's own workers finish it) before any line but ``ibt status``;
  ``> FILE`` writes stdout to FILE; ``pairs.jsonl``, ``alpaca.jsonl`` and ``gold_demo.jsonl``,
  which the README takes for granted, are copies of ``producer/examples/demo_pairs.jsonl``,
  ``alpaca_sample.jsonl`` and ``gold_demo.jsonl``. Servers (``ibt worker``, ``ibt flower``)
  count as run once they answer (a Celery ping; Flower's API with the line's basic auth) and
  are stopped at the end of their block. Every other line must exit 0.
- no language: prose (the architecture diagram), not run.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from producer import job as jobs
from producer.checks import check_config
from producer.inputs import ColumnMap, load_pairs
from producer.local import ValkeyProcess
from producer.processes import spawn, stop, tail
from producer.simulator import simulated_score
from producer.simulator_process import SimulatorProcess
from tests.conftest import TEST_KEY
from tests.test_cli import clean_env, processes_with_marker
from workers import jobstate
from workers.app import create_app
from workers.models import ModelRegistry
from workers.settings import DEFAULT_BROKER_URL

# The bash blocks run once, in the first bash test's setup (about 130 s of the file's 150 s
# on an idle machine since the large-jobs, calibration and sampling lines came in).
pytestmark = pytest.mark.timeout(400)
ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^[ \t]*```(?P<info>[^`\n]*)\n(?P<body>.*?)^[ \t]*```[ \t]*$", re.M | re.S)
PROSE, RULES = "", ("json", "toml", "python", "bash")
DOCUMENTED_KEYS = ["reasoning", "score", "instruction", "generation", "model"]
SCORES = {"1", "2", "3", "4", "5"}
# Files the README's commands take for granted; created in the working directory first.
GIVEN_FILES = {
    "pairs.jsonl": ROOT / "producer" / "examples" / "demo_pairs.jsonl",
    "alpaca.jsonl": ROOT / "producer" / "examples" / "alpaca_sample.jsonl",
    "gold_demo.jsonl": ROOT / "producer" / "examples" / "gold_demo.jsonl",
}
LINE_TIMEOUT = 60.0
SERVER_TIMEOUT = 30.0
VALKEY_PASSWORD = "readme-test-pw"
SCORE_VALUED = {
    "-m",
    "--model",
    "-o",
    "--output",
    "--resume",
    "--models-file",
    "--prompt-file",
    "--map",
    "--window",
    "--max-cost",
}
SHELL_SYNTAX = re.compile(r"^(\||\|\||&&|;|&|<|>>|\d>.*|>&.*)$")


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    body: str

    def __str__(self) -> str:
        return f"README.md:{self.line} (```{self.lang})"


def read_blocks(text: str) -> list[Block]:
    blocks = []
    for match in FENCE.finditer(text):
        info = match["info"].split()
        blocks.append(
            Block(
                line=text.count("\n", 0, match.start()) + 1,
                lang=info[0].lower() if info else PROSE,
                body=textwrap.dedent(match["body"]),
            )
        )
    return blocks


README_TEXT = README.read_text(encoding="utf-8")
BLOCKS = read_blocks(README_TEXT)


def blocks_of(lang: str) -> list[Any]:
    return [pytest.param(b, id=f"L{b.line}") for b in BLOCKS if b.lang == lang]


# --- bash: lines and the rule that runs each ------------------------------------------------


@dataclass(frozen=True)
class Line:
    number: int
    text: str
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"README.md:{self.number} `{self.text}`"


class NoRule(Exception):
    """A bash line no rule here knows how to run."""


def bash_lines(block: Block) -> list[Line]:
    """Comments stripped (``#`` starting a word, as bash reads it), continuations joined."""
    lines: list[Line] = []
    pending, start = "", block.line + 1
    for offset, raw in enumerate(block.body.splitlines()):
        if not pending:
            start = block.line + 1 + offset
        code = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if code.endswith("\\"):
            pending += code[:-1] + " "
            continue
        text, pending = (pending + code).strip(), ""
        if text:
            lines.append(Line(start, " ".join(text.split()), tuple(shlex.split(text))))
    return lines


@dataclass(frozen=True)
class Step:
    line: Line
    kind: str  # export | run | server | collect
    args: tuple[str, ...]  # the words after `uv run TOOL` (after `export`)
    prefix: tuple[str, ...] = ()  # what runs TOOL from this venv
    tool: str = ""  # ibt | celery | pytest
    command: str = ""  # the subcommand: score, worker, inspect, ...
    cwd: Path | None = None  # None: the shared working directory
    stdout_to: str | None = None

    def option(self, *names: str) -> str | None:
        """The value of ``NAME VALUE`` or ``NAME=VALUE`` in this line, if given."""
        for i, word in enumerate(self.args):
            for name in names:
                if word == name and i + 1 < len(self.args):
                    return self.args[i + 1]
                if word.startswith(name + "="):
                    return word.split("=", 1)[1]
        return None

    def options(self, *names: str) -> list[str]:
        return [self.args[i + 1] for i, w in enumerate(self.args[:-1]) if w in names]


def first_positional(args: tuple[str, ...], takes_value: set[str]) -> str:
    skip = False
    for word in args:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            return word
    return ""


def plan(line: Line) -> Step:
    """The rule for ``line``, or NoRule naming it."""
    words = line.words
    no_rule = NoRule(
        f"{line}: no rule in tests/test_readme.py runs this line; teach it one (the bash rules "
        "are in its docstring) or change the README"
    )
    if words[0] == "export":
        if len(words) > 1 and all(re.fullmatch(r"[A-Za-z_]\w*=.*", w) for w in words[1:]):
            return Step(line, "export", words[1:])
        raise no_rule
    if words[:2] != ("uv", "run") or len(words) < 3:
        raise no_rule
    tool, args, stdout_to = words[2], words[3:], None
    if ">" in args:
        at = args.index(">")
        if at != len(args) - 2:
            raise no_rule
        args, stdout_to = args[:at], args[-1]
    if any(SHELL_SYNTAX.match(w) or w.startswith((">", "<", "|")) for w in args):
        raise no_rule
    if tool == "pytest" and not args and stdout_to is None:
        # The suite cannot run inside itself: collecting it shows `uv run pytest` would start.
        prefix = (sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider")
        return Step(line, "collect", args, prefix, tool, cwd=ROOT)
    if tool == "ibt":
        command = first_positional(args, {"--models-file", "--prompt-file"})
        kind = "server" if command in ("worker", "flower") else "run"
        prefix = (sys.executable, "-m", "producer.cli")
        return Step(line, kind, args, prefix, tool, command, stdout_to=stdout_to)
    if tool == "celery":
        command = first_positional(args, {"-A", "--app", "-b", "--broker", "--workdir"})
        kind = "server" if command in ("worker", "flower") else "run"
        prefix = (sys.executable, "-m", "celery")
        # `-A workers` names the package; run where a user would, in the project.
        return Step(line, kind, args, prefix, tool, command, cwd=ROOT, stdout_to=stdout_to)
    raise no_rule


# --- what a user would see ------------------------------------------------------------------


def read_records(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(path).to_pylist())
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def record_problems(
    where: str, records: list[dict[str, Any]], pairs: list[dict[str, Any]], models: list[str]
) -> list[str]:
    """The documented list: one record per (pair, model) in order, scored by the simulator."""
    expected = [(p["instruction"], p["generation"], m) for p in pairs for m in models]
    got = [(r.get("instruction"), r.get("generation"), r.get("model")) for r in records]
    if got != expected:
        return [f"{where}: records {got} are not one per (pair, model) in order: {expected}"]
    problems = []
    for record in records:
        if list(record)[:5] != DOCUMENTED_KEYS:
            problems.append(f"{where}: record keys {list(record)} do not start {DOCUMENTED_KEYS}")
        want = str(simulated_score(record["model"], record["instruction"], record["generation"]))
        if record["score"] != want:
            problems.append(f"{where}: {record} was not scored {want} by the simulator")
    return problems


def http_status(url: str, auth: str | None) -> int | None:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


# --- the bash session -----------------------------------------------------------------------


@dataclass
class Server:
    step: Step
    process: subprocess.Popen[bytes]
    log: Path
    broker: str
    reported: bool = False


@dataclass
class PendingJob:
    step: Step
    job: str
    broker: str
    pairs: list[dict[str, Any]]
    models: list[str]


@dataclass
class BashOutcome:
    problems: dict[int, list[str]] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)
    left_behind: list[int] = field(default_factory=list)


class BashSession:
    """Runs bash blocks in order, in one directory, collecting every problem per block."""

    def __init__(
        self, workdir: Path, logs: Path, valkey: ValkeyProcess, simulator: SimulatorProcess
    ) -> None:
        self.workdir, self.logs, self.valkey, self.simulator = workdir, logs, valkey, simulator
        self.marker = f"IBT_README_MARKER_{uuid.uuid4().hex}"
        self.exported: dict[str, str] = {}
        self.job: PendingJob | None = None
        self.job_id: str | None = None
        self.servers: list[Server] = []
        self.apps: dict[str, Celery] = {}
        for name, source in GIVEN_FILES.items():
            shutil.copyfile(source, workdir / name)

    def env(self, block: Block) -> dict[str, str]:
        """A clean environment: no developer config, the embedded stack's data in the test's
        directory, and for a block that names judges with ``-m``, keys the simulator accepts."""
        env = clean_env(IBT_HOME=str(self.logs / "ibt-home"), **{self.marker: "1"})
        if any({"-m", "--model"} & set(line.words) for line in bash_lines(block)):
            env.update(
                OPENAI_API_KEY=TEST_KEY,
                ANTHROPIC_API_KEY=TEST_KEY,
                OPENAI_BASE_URL=self.simulator.openai_base_url,
                ANTHROPIC_BASE_URL=self.simulator.anthropic_base_url,
            )
        env.update(self.exported)
        return env

    def app(self, broker: str) -> Celery:
        if broker not in self.apps:
            self.apps[broker] = create_app(broker)
        return self.apps[broker]

    def run_block(self, block: Block) -> list[str]:
        problems: list[str] = []
        first_server = len(self.servers)
        for line in bash_lines(block):
            try:
                step = plan(line)
            except NoRule as exc:
                problems.append(str(exc))
                continue
            try:
                if self.job is not None and (step.tool, step.command) != ("ibt", "status"):
                    problems += self.finish_job()
                problems += self.run_step(step, self.env(block))
            except Exception as exc:  # a changed command must fail its block, not the harness
                problems.append(f"{line}: {type(exc).__name__}: {exc}")
        if self.job is not None:
            problems += self.finish_job()
        for server in self.servers[first_server:]:
            code = server.process.poll()
            if code is not None and not server.reported:
                problems.append(
                    f"{server.step.line} exited {code} while serving:\n{tail(server.log)}"
                )
            stop(server.process)
        return problems

    def paid_calls(self) -> int:
        """Requests the simulator answered, synchronously or as lines of a batch."""
        stats = self.simulator.stats()
        return int(stats["requests"]) + int(stats["batch_lines"])

    def run_step(self, step: Step, env: dict[str, str]) -> list[str]:
        if step.kind == "export":
            for assignment in step.args:
                name, value = assignment.split("=", 1)
                value = value.replace("PASSWORD", VALKEY_PASSWORD)
                self.exported[name] = value.replace(
                    "redis-host:6379", f"127.0.0.1:{self.valkey.port}"
                )
            return []
        args = list(step.args)
        if "JOB" in args:
            if self.job_id is None:
                return [f"{step.line}: JOB, but no earlier line printed a job id (--no-wait)"]
            args = [self.job_id if w == "JOB" else w for w in args]
        argv = [*step.prefix, *args]
        if step.kind == "server":
            return self.start_server(step, argv, env)
        requests_before = self.paid_calls()
        try:
            done = subprocess.run(
                argv,
                cwd=step.cwd or self.workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=LINE_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            return [f"{step.line} did not finish in {LINE_TIMEOUT:.0f} s"]
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
            return [f"{step.line} exited {done.returncode}, expected 0:\n{output}"]
        if step.stdout_to:
            (self.workdir / step.stdout_to).write_text(done.stdout, encoding="utf-8")
        return self.check(step, done, env, requests_before)

    def check(
        self,
        step: Step,
        done: subprocess.CompletedProcess[str],
        env: dict[str, str],
        requests_before: int,
    ) -> list[str]:
        """What a user would look at after the line, where there is something to look at."""
        line, shown = step.line, done.stdout + done.stderr
        if step.kind == "collect":
            collected = re.search(r"(\d+) tests? collected", done.stdout)
            if collected is None or int(collected[1]) <= 100:
                return [f"{line}: collected {collected and collected[1]} tests, expected > 100"]
            return []
        what = (step.tool, step.command)
        if what == ("celery", "inspect") and "pong" not in done.stdout:
            return [f"{line}: no worker answered:\n{shown}"]
        if what == ("ibt", "demo"):
            problems = []
            if "OPENAI_API_KEY" not in env and "SIMULATED" not in done.stderr:
                problems.append(f"{line}: without keys the demo must say its judges are SIMULATED")
            if step.option("-o", "--output") is None and step.stdout_to is None:
                records = json.loads(done.stdout)
                if not records or any(
                    list(r)[:5] != DOCUMENTED_KEYS or r["score"] not in SCORES for r in records
                ):
                    problems.append(f"{line}: printed no documented list of scores:\n{shown}")
            return problems
        if what == ("ibt", "score"):
            after = step.args[step.args.index("score") + 1 :]
            source = first_positional(after, SCORE_VALUED)
            pairs = []
            if source not in ("", "-"):  # the pairs as --map reads them from the input
                mapping = ColumnMap.parse(step.options("--map"))
                loaded = load_pairs(str(self.workdir / source), mapping=mapping)
                pairs = [{"instruction": p.instruction, "generation": p.generation} for p in loaded]
            models = step.options("-m", "--model")
            if "--no-wait" in step.args:
                self.job_id = done.stdout.strip().splitlines()[-1]
                broker = env.get("IBT_BROKER_URL", "")
                self.job = PendingJob(step, self.job_id, broker, pairs, models)
                return []
            output = step.option("-o", "--output")
            if output is None:
                return []
            problems = record_problems(
                str(line), read_records(self.workdir / output), pairs, models
            )
            # Each verdict is one call, synchronous or in a batch, or a cache hit that the run
            # summary beside the output counts.
            calls = self.paid_calls() - requests_before
            unique = len({(p["instruction"], p["generation"]) for p in pairs}) * len(models)
            summary = json.loads((self.workdir / (output + ".summary.json")).read_text())
            cached = sum(entry["cached"] for entry in summary["models"].values())
            if calls + cached != unique:
                problems.append(
                    f"{line}: {calls} simulator calls and {cached} cached for {unique} verdicts"
                )
            return problems
        if what == ("ibt", "status") and self.job_id not in shown:
            return [f"{line}: does not show job {self.job_id}:\n{shown}"]
        if what == ("ibt", "report"):
            problems = []
            png_dir = step.option("--png")
            if png_dir and not list((self.workdir / png_dir).glob("*.png")):
                problems.append(f"{line}: wrote no .png into {png_dir}")
            if "--json" in step.args:
                report = json.loads(done.stdout)
                if not {"models", "agreement", "consensus"} <= set(report):
                    problems.append(f"{line}: the JSON report lacks models/agreement/consensus")
            return problems
        if what == ("ibt", "select"):
            output = step.option("-o", "--output")
            if output is None:
                return []
            target = self.workdir / output
            if not target.is_file():
                return [f"{line}: wrote no {output}"]
            minimum = float(step.option("--min-score") or 1)
            for kept in read_records(target):
                if not {"instruction", "generation", "scores", "aggregate"} <= set(kept) or (
                    kept["aggregate"]["value"] < minimum
                ):
                    return [f"{line}: {output} holds {kept}"]
        return []

    def start_server(self, step: Step, argv: list[str], env: dict[str, str]) -> list[str]:
        log = self.logs / f"L{step.line.number}-{step.command}.log"
        broker = env.get("IBT_BROKER_URL") or DEFAULT_BROKER_URL
        process = spawn(argv, env=env, log_path=log, cwd=step.cwd or self.workdir)
        server = Server(step, process, log, broker)
        self.servers.append(server)
        wait = self.worker_ready if step.command == "worker" else self.flower_ready
        problem = None
        deadline = time.monotonic() + SERVER_TIMEOUT
        while problem is None and time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                problem = f"{step.line} exited {code} before it was ready:\n{tail(log)}"
                break
            ready, problem = wait(server)
            if ready:
                return []
            time.sleep(0.2)
        server.reported = True
        stop(process)
        return [problem or f"{step.line} was not ready in {SERVER_TIMEOUT:.0f} s:\n{tail(log)}"]

    def worker_ready(self, server: Server) -> tuple[bool, str | None]:
        refused = [
            line.split("consumer: ")[-1]
            for line in server.log.read_text(errors="replace").splitlines()
            if "Cannot connect to" in line
        ]
        if refused:
            return False, f"{server.step.line} cannot reach its broker: {refused[0]}"
        try:
            redis.Redis.from_url(server.broker, socket_connect_timeout=1).ping()
        except redis.exceptions.RedisError:
            return False, None
        expected = sum(
            1
            for s in self.servers
            if s.step.command == "worker" and s.broker == server.broker and not s.reported
        )
        return len(self.app(server.broker).control.ping(timeout=0.5)) >= expected, None

    def flower_ready(self, server: Server) -> tuple[bool, str | None]:
        port = server.step.option("--port") or "5555"
        auth = server.step.option("--basic-auth")
        url = f"http://127.0.0.1:{port}/api/workers"
        if http_status(url, auth.split(",")[0] if auth else None) != 200:
            return False, None
        if auth and http_status(url, None) != 401:
            return False, f"{server.step.line}: Flower answers {url} without the password"
        return True, None

    def finish_job(self) -> list[str]:
        """Wait for the --no-wait job (its own block started its workers), then check it."""
        pending, self.job = self.job, None
        assert pending is not None
        where = f"{pending.step.line} (job {pending.job})"
        client = jobstate.client_for_url(pending.broker)
        deadline = time.monotonic() + LINE_TIMEOUT
        try:
            while True:
                snapshot = jobstate.progress(client, pending.job)
                if snapshot is not None and snapshot.status == "done":
                    break
                if snapshot is None or snapshot.status == "failed":
                    return [f"{where}: the job is {snapshot and snapshot.status or 'unknown'}"]
                serving = [s for s in self.servers if s.broker == pending.broker]
                if not any(s.process.poll() is None for s in serving):
                    return [f"{where}: no worker of this block is running to finish the job"]
                if time.monotonic() > deadline:
                    return [f"{where}: not done in {LINE_TIMEOUT:.0f} s: {snapshot}"]
                time.sleep(0.2)
            result = jobs.fetch(self.app(pending.broker), pending.job)
        finally:
            client.close()
        if result is None:
            return [f"{where}: done, but its result cannot be fetched"]
        return record_problems(where, list(result.records()), pending.pairs, pending.models)

    def close(self) -> None:
        for server in self.servers:
            stop(server.process)
        for app in self.apps.values():
            app.pool.force_close_all()


@pytest.fixture(scope="module")
def bash_outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BashOutcome]:
    """Every bash block run once, in README order; what went wrong, per block."""
    outcome = BashOutcome()
    logs = tmp_path_factory.mktemp("readme-logs")
    valkey = ValkeyProcess(logs / "valkey", password=VALKEY_PASSWORD)
    simulator = SimulatorProcess(latency=0.0, api_key=TEST_KEY)
    session: BashSession | None = None
    try:
        valkey.start()
        simulator.start()
        session = BashSession(tmp_path_factory.mktemp("readme-work"), logs, valkey, simulator)
        for block in BLOCKS:
            if block.lang == "bash":
                started = time.monotonic()
                outcome.problems[block.line] = session.run_block(block)
                outcome.seconds[block.line] = time.monotonic() - started
    finally:
        if session is not None:
            session.close()
        simulator.stop()
        valkey.stop()
    if session is not None:
        outcome.left_behind = processes_with_marker(session.marker)
    yield outcome


# --- the tests ------------------------------------------------------------------------------


def test_every_block_has_a_rule() -> None:
    fences = [
        n for n, line in enumerate(README_TEXT.splitlines(), 1) if line.lstrip().startswith("```")
    ]
    problems = []
    if len(fences) != 2 * len(BLOCKS):
        problems.append(f"README.md: fences at lines {fences} do not pair up into blocks")
    for block in BLOCKS:
        if block.lang not in (PROSE, *RULES):
            problems.append(
                f"{block}: tests/test_readme.py has no rule for ```{block.lang} blocks; add one, "
                "or leave the block without a language if it is prose"
            )
        if block.lang == "bash":
            for line in bash_lines(block):
                try:
                    plan(line)
                except NoRule as exc:
                    problems.append(str(exc))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", blocks_of("json"))
def test_json_block_parses(block: Block) -> None:
    value = json.loads(block.body)
    if block == next(b for b in BLOCKS if b.lang == "json"):
        # The documented output: the list Dria's executor returns.
        assert isinstance(value, list) and value, f"{block}: not a non-empty list"
        for record in value:
            assert list(record) == DOCUMENTED_KEYS, f"{block}: keys {list(record)}"
            assert isinstance(record["score"], str) and record["score"] in SCORES, record


@pytest.mark.parametrize("block", blocks_of("toml"))
def test_toml_block_is_a_models_file(block: Block, tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(block.body, encoding="utf-8")
    registry = ModelRegistry.load(str(path))
    assert registry.defined, f"{block}: defines no model"
    specs = [registry.resolve(name) for name in registry.defined]
    assert [s.name for s in specs] == list(registry.defined)
    check_config(specs)


# Runs a block as __main__ and keeps every record the Python API returned, so the test knows
# how many verdicts (and so simulator calls) the block asked for.
RUNNER = """\
import json, runpy, sys
from producer import api
returned = []
score_pairs = api.score_pairs
def counting(*args, **kwargs):
    records = score_pairs(*args, **kwargs)
    returned.extend(records)
    return records
api.score_pairs = counting
try:
    runpy.run_path(sys.argv[1], run_name="__main__")
finally:
    with open(sys.argv[2], "w") as handle:
        json.dump(returned, handle)
"""


def run_python_block(
    body: str, workdir: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """``body`` run as a script in ``workdir``; its outcome and the records it was given."""
    (workdir / "readme_block.py").write_text(body, encoding="utf-8")
    (workdir / "runner.py").write_text(RUNNER, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "runner.py", "readme_block.py", "returned.json"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=LINE_TIMEOUT,
    )
    returned = workdir / "returned.json"
    return done, json.loads(returned.read_text()) if returned.exists() else []


@pytest.mark.parametrize("block", blocks_of("python"))
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    marker = f"IBT_README_MARKER_{uuid.uuid4().hex}"
    workdir = tmp_path / "work"
    workdir.mkdir()
    with SimulatorProcess(latency=0.0, api_key=TEST_KEY) as sim:
        env = clean_env(
            OPENAI_API_KEY=TEST_KEY,
            ANTHROPIC_API_KEY=TEST_KEY,
            OPENAI_BASE_URL=sim.openai_base_url,
            ANTHROPIC_BASE_URL=sim.anthropic_base_url,
            IBT_HOME=str(tmp_path / "ibt-home"),
            **{marker: "1"},
        )
        done, returned = run_python_block(block.body, workdir, env)
        assert done.returncode == 0, f"{block} exited {done.returncode}:\n{done.stderr[-3000:]}"
        calls = sim.stats()["requests"]
    verdicts = {(r["instruction"], r["generation"], r["model"]) for r in returned}
    assert calls > 0, f"{block}: the simulator got no call"
    assert calls == len(verdicts), f"{block}: {calls} simulator calls for {len(verdicts)} verdicts"
    for record in returned:
        assert list(record)[:5] == DOCUMENTED_KEYS, record
        assert record["score"] == str(
            simulated_score(record["model"], record["instruction"], record["generation"])
        ), record
    assert processes_with_marker(marker) == [], f"{block} left processes behind"


@pytest.mark.parametrize("block", blocks_of("bash"))
def test_bash_block_runs(block: Block, bash_outcome: BashOutcome) -> None:
    problems = bash_outcome.problems[block.line]
    took = bash_outcome.seconds[block.line]
    assert not problems, f"{block} ({took:.1f} s):\n" + "\n\n".join(problems)


def test_bash_blocks_leave_no_process_behind(bash_outcome: BashOutcome) -> None:
    assert bash_outcome.left_behind == [], "README commands left processes behind"
