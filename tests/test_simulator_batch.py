"""The simulator's batch APIs, driven only through the official openai and anthropic SDKs.

Every shape the simulator returns is also validated strictly against the SDKs' own models (the
SDKs build their objects without validation, so a wrong field would otherwise pass unseen).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

import anthropic
import openai
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse
from openai.types import Batch, FileDeleted, FileObject

from producer.simulator import simulated_score
from producer.simulator_process import SimulatorProcess
from workers.prompt import render

KEY = "sk-ibt-batch-test-0123456789"
GPT = "gpt-test"
CLAUDE = "claude-test"
ENDPOINT: Final = "/v1/chat/completions"
DEFAULT_KNOBS: dict[str, Any] = {
    "batch_latency": 0.0,
    "batch_fault": 0.0,
    "batch_cancel_delay": 0.2,
    "batch_expire_after": None,
    "batch_fail_validation": None,
    "batch_token_limit": 0,
    "hold_file_create": 0.0,
    "hold_batch_create": 0.0,
    "hold_results": 0.0,
}
_SCORE = re.compile(r"Score: (\d)")
T = TypeVar("T")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    process = SimulatorProcess(api_key=KEY)
    process.start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _fresh(sim: SimulatorProcess) -> None:
    """Each test starts from an empty simulator with the batch knobs at their defaults."""
    sim.configure(**DEFAULT_KNOBS)
    sim.reset()


@pytest.fixture
def oai(sim: SimulatorProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.openai_base_url, api_key=KEY, max_retries=0)


@pytest.fixture
def claude(sim: SimulatorProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key=KEY, max_retries=0)


def wait_for(check: Callable[[], T | None], timeout: float = 10.0) -> T:
    """Poll until ``check`` returns something truthy (and return it), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s")


def pairs(n: int, tag: str = "p") -> list[tuple[str, str]]:
    return [(f"Instruction {tag}{i}: explain item {i}.", f"Answer {tag}{i}.") for i in range(n)]


def messages(instruction: str, generation: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": render(instruction, generation, None)}]


def openai_line(
    custom_id: str, pair: tuple[str, str], model: str = GPT, url: str = ENDPOINT
) -> dict[str, Any]:
    body = {"model": model, "messages": messages(*pair)}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def anthropic_request(custom_id: str, pair: tuple[str, str]) -> dict[str, Any]:
    params = {"model": CLAUDE, "max_tokens": 256, "messages": messages(*pair)}
    return {"custom_id": custom_id, "params": params}


def submit(oai: openai.OpenAI, lines: list[dict[str, Any]], **extra: Any) -> Batch:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = oai.files.create(file=("requests.jsonl", data), purpose="batch")
    FileObject.model_validate(raw_json(oai.files.with_raw_response.retrieve(uploaded.id)))
    assert oai.files.content(uploaded.id).content == data
    created = oai.batches.with_raw_response.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h", **extra
    )
    return Batch.model_validate(raw_json(created))


def raw_json(response: Any) -> Any:
    return json.loads(response.http_response.text)


def openai_final(oai: openai.OpenAI, batch_id: str, timeout: float = 10.0) -> Batch:
    """Poll the batch until it ends, checking each shape strictly on the way."""

    def ended() -> Batch | None:
        raw = raw_json(oai.batches.with_raw_response.retrieve(batch_id))
        batch = Batch.model_validate(raw)
        ending = ("completed", "failed", "expired", "cancelled")
        return batch if batch.status in ending else None

    return wait_for(ended, timeout)


def anthropic_final(claude: anthropic.Anthropic, batch_id: str) -> MessageBatch:
    def ended() -> MessageBatch | None:
        raw = raw_json(claude.messages.batches.with_raw_response.retrieve(batch_id))
        batch = MessageBatch.model_validate(raw)
        return batch if batch.processing_status == "ended" else None

    return wait_for(ended)


def jsonl(oai: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    rows = [json.loads(row) for row in oai.files.content(file_id).text.splitlines()]
    return {row["custom_id"]: row for row in rows}


def results(claude: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    """The results by custom_id, via the SDK (which follows results_url), checked strictly."""
    found = {r.custom_id: r.result for r in claude.messages.batches.results(batch_id)}
    raw = claude.messages.batches.with_raw_response.results(batch_id).http_response.read()
    for row in raw.decode().splitlines():
        MessageBatchIndividualResponse.model_validate(json.loads(row))
    return found


def score_of(text: str) -> int:
    match = _SCORE.search(text)
    assert match, text
    return int(match.group(1))


# -- lifecycle -------------------------------------------------------------------------------


def test_openai_lifecycle(sim: SimulatorProcess, oai: openai.OpenAI) -> None:
    """Lines complete over batch_latency; the output is what the sync endpoint returns."""
    sim.configure(batch_latency=0.6)
    batch_pairs = pairs(6)
    created = submit(oai, [openai_line(f"row-{i}", p) for i, p in enumerate(batch_pairs)])
    assert created.status == "validating" and created.id.startswith("batch_")

    seen: list[tuple[str, int]] = []

    def ended() -> Batch | None:
        batch = oai.batches.retrieve(created.id)
        assert batch.request_counts is not None
        seen.append((batch.status, batch.request_counts.completed))
        return batch if batch.status == "completed" else None

    batch = wait_for(ended)
    done = [count for _, count in seen]
    assert done == sorted(done) and "in_progress" in {status for status, _ in seen}
    assert batch.request_counts is not None and batch.request_counts.total == 6
    assert (batch.request_counts.completed, batch.request_counts.failed) == (6, 0)
    assert batch.error_file_id is None and batch.errors is None
    assert batch.completed_at and batch.in_progress_at and batch.model == GPT
    assert batch.usage is not None and batch.usage.total_tokens > 0

    output = jsonl(oai, batch.output_file_id)
    assert set(output) == {f"row-{i}" for i in range(6)}
    for i, (instruction, generation) in enumerate(batch_pairs):
        row = output[f"row-{i}"]
        assert row["id"].startswith("batch_req_") and row["error"] is None
        assert row["response"]["status_code"] == 200
        body = openai.types.chat.ChatCompletion.model_validate(row["response"]["body"])
        assert score_of(body.choices[0].message.content or "") == simulated_score(
            GPT, instruction, generation
        )
        assert body.usage is not None and body.usage.prompt_tokens > 0

    # A success line carries exactly the sync endpoint's body (ids and timestamps aside).
    sync = raw_json(
        oai.chat.completions.with_raw_response.create(
            model=GPT,
            messages=messages(*batch_pairs[0]),  # type: ignore[arg-type]
        )
    )
    same = {k: v for k, v in output["row-0"]["response"]["body"].items() if k != "id"}
    assert same == {k: v for k, v in sync.items() if k != "id"} | {"created": same["created"]}

    stats = sim.stats()
    assert stats["batch_lines"] == 6 and stats["paid"] == {"sync": 1, "batch": 6}
    assert stats["requests"] == 1  # the sync log stays about sync requests
    assert stats["log"][0]["key"] == stats["batch_log"][0]["key"]
    assert {e["custom_id"] for e in stats["batch_log"]} == set(output)
    assert stats["batches"][0]["status"] == "completed" and stats["batches"][0]["n"] == 6
    assert stats["duplicates"] == 1  # row-0's pair, paid by the batch and again in sync

    deleted = raw_json(oai.files.with_raw_response.delete(batch.output_file_id or ""))
    assert FileDeleted.model_validate(deleted).deleted
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(batch.output_file_id or "")


def test_anthropic_lifecycle(sim: SimulatorProcess, claude: anthropic.Anthropic) -> None:
    sim.configure(batch_latency=0.4)
    batch_pairs = pairs(4, "a")
    raw = claude.messages.batches.with_raw_response.create(
        requests=[anthropic_request(f"row-{i}", p) for i, p in enumerate(batch_pairs)]  # type: ignore[misc]
    )
    created = MessageBatch.model_validate(raw_json(raw))
    assert created.id.startswith("msgbatch_") and created.processing_status == "in_progress"
    assert created.request_counts.processing == 4 and created.results_url is None

    batch = anthropic_final(claude, created.id)
    assert batch.request_counts.succeeded == 4 and batch.request_counts.processing == 0
    assert batch.ended_at is not None and batch.ended_at >= batch.created_at
    assert batch.results_url == f"{sim.url}/v1/messages/batches/{created.id}/results"

    found = results(claude, created.id)
    for i, (instruction, generation) in enumerate(batch_pairs):
        result = found[f"row-{i}"]
        assert result.type == "succeeded"
        text = result.message.content[0].text
        assert score_of(text) == simulated_score(CLAUDE, instruction, generation)
        assert result.message.usage.input_tokens > 0 and result.message.usage.output_tokens > 0
    assert sim.stats()["paid"] == {"sync": 0, "batch": 4}


# -- per-line failures ------------------------------------------------------------------------


def test_openai_line_failures(sim: SimulatorProcess, oai: openai.OpenAI) -> None:
    """Directive statuses become error-file lines carrying the sync error body."""
    good, bad500, bad400 = pairs(3, "f")
    bad500 = (bad500[0] + " <<sim:status=500>>", bad500[1])
    bad400 = (bad400[0] + " <<sim:status=400>>", bad400[1])
    lines = [openai_line("ok", good), openai_line("e500", bad500), openai_line("e400", bad400)]
    batch = openai_final(oai, submit(oai, lines).id)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 2)
    assert set(jsonl(oai, batch.output_file_id)) == {"ok"}
    errors = jsonl(oai, batch.error_file_id)
    assert set(errors) == {"e500", "e400"}
    for custom_id, status, kind in (
        ("e500", 500, "server_error"),
        ("e400", 400, "invalid_request_error"),
    ):
        response = errors[custom_id]["response"]
        assert response["status_code"] == status
        assert response["body"]["error"]["type"] == kind
        assert set(response["body"]["error"]) == {"message", "type", "param", "code"}
    assert sim.stats()["paid"]["batch"] == 1  # failures are not paid


def test_openai_batch_fault(sim: SimulatorProcess, oai: openai.OpenAI) -> None:
    """batch_fault fails a deterministic share of lines with 500; all failing still completes."""
    sim.configure(batch_fault=0.5)
    lines = [openai_line(f"r{i}", p) for i, p in enumerate(pairs(20, "bf"))]
    batch = openai_final(oai, submit(oai, lines).id)
    failed = jsonl(oai, batch.error_file_id)
    assert 0 < len(failed) < 20
    assert {row["response"]["status_code"] for row in failed.values()} == {500}
    assert len(jsonl(oai, batch.output_file_id)) == 20 - len(failed)

    sim.configure(batch_fault=1.0)
    lines = [openai_line(f"r{i}", p) for i, p in enumerate(pairs(3, "all"))]
    batch = openai_final(oai, submit(oai, lines).id)
    assert batch.status == "completed" and batch.output_file_id is None
    assert len(jsonl(oai, batch.error_file_id)) == 3


def test_anthropic_line_failures(sim: SimulatorProcess, claude: anthropic.Anthropic) -> None:
    """Errored results nest the error envelope, with the type matching the status."""
    good, e500, e400, e529 = pairs(4, "af")
    requests = [
        anthropic_request("ok", good),
        anthropic_request("e500", (e500[0] + " <<sim:status=500>>", e500[1])),
        anthropic_request("e400", (e400[0] + " <<sim:status=400>>", e400[1])),
        anthropic_request("e529", (e529[0] + " <<sim:status=529>>", e529[1])),
    ]
    batch = anthropic_final(claude, claude.messages.batches.create(requests=requests).id)  # type: ignore[arg-type]
    assert (batch.request_counts.succeeded, batch.request_counts.errored) == (1, 3)
    found = results(claude, batch.id)
    assert found["ok"].type == "succeeded"
    for custom_id, kind in (
        ("e500", "api_error"),
        ("e400", "invalid_request_error"),
        ("e529", "overloaded_error"),
    ):
        assert found[custom_id].type == "errored"
        assert found[custom_id].error.type == "error"
        assert found[custom_id].error.error.type == kind

    sim.configure(batch_fault=1.0)
    requests = [anthropic_request(f"r{i}", p) for i, p in enumerate(pairs(3, "aall"))]
    batch = anthropic_final(claude, claude.messages.batches.create(requests=requests).id)  # type: ignore[arg-type]
    assert batch.request_counts.errored == 3
    assert {r.error.error.type for r in results(claude, batch.id).values()} == {"api_error"}  # type: ignore[union-attr]


# -- expiry and cancel ------------------------------------------------------------------------


def test_expiry_keeps_partial_results(
    sim: SimulatorProcess, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    sim.configure(batch_expire_after=0.5)
    lines = [openai_line(f"r{i}", p) for i, p in enumerate(pairs(6, "x"))]
    batch = openai_final(oai, submit(oai, lines).id)
    assert batch.status == "expired" and batch.expired_at is not None
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (3, 3)
    assert set(jsonl(oai, batch.output_file_id)) == {"r0", "r1", "r2"}
    expired = jsonl(oai, batch.error_file_id)
    assert set(expired) == {"r3", "r4", "r5"}
    for row in expired.values():
        assert row["response"] is None and row["error"]["code"] == "batch_expired"

    requests = [anthropic_request(f"r{i}", p) for i, p in enumerate(pairs(4, "y"))]
    mbatch = anthropic_final(claude, claude.messages.batches.create(requests=requests).id)  # type: ignore[arg-type]
    assert (mbatch.request_counts.succeeded, mbatch.request_counts.expired) == (2, 2)
    kinds = {k: r.type for k, r in results(claude, mbatch.id).items()}
    assert kinds == {"r0": "succeeded", "r1": "succeeded", "r2": "expired", "r3": "expired"}
    assert sim.stats()["paid"]["batch"] == 5


def _lines_done(sim: SimulatorProcess, batch_id: str, at_least: int) -> bool:
    summary = next(b for b in sim.stats()["batches"] if b["id"] == batch_id)
    return bool(summary["counts"]["succeeded"] >= at_least)


def test_openai_cancel_keeps_completed(sim: SimulatorProcess, oai: openai.OpenAI) -> None:
    sim.configure(batch_latency=3.0)
    created = submit(oai, [openai_line(f"r{i}", p) for i, p in enumerate(pairs(10, "c"))])
    wait_for(lambda: _lines_done(sim, created.id, 2))
    cancelling = Batch.model_validate(raw_json(oai.batches.with_raw_response.cancel(created.id)))
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    batch = openai_final(oai, created.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    assert batch.request_counts is not None and batch.request_counts.total == 10
    kept = jsonl(oai, batch.output_file_id)
    assert 2 <= len(kept) < 10 and batch.request_counts.completed == len(kept)
    assert batch.error_file_id is None  # lines never run appear in no file
    assert sim.stats()["paid"]["batch"] == len(kept)
    with pytest.raises(openai.ConflictError):
        oai.batches.cancel(created.id)


def test_anthropic_cancel_keeps_completed(
    sim: SimulatorProcess, claude: anthropic.Anthropic
) -> None:
    sim.configure(batch_latency=3.0)
    requests = [anthropic_request(f"r{i}", p) for i, p in enumerate(pairs(10, "ac"))]
    created = claude.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    wait_for(lambda: _lines_done(sim, created.id, 2))
    canceling = MessageBatch.model_validate(
        raw_json(claude.messages.batches.with_raw_response.cancel(created.id))
    )
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    batch = anthropic_final(claude, created.id)
    counts = batch.request_counts
    assert counts.succeeded >= 2 and counts.succeeded + counts.canceled == 10
    kinds = [r.type for r in results(claude, created.id).values()]
    assert kinds.count("succeeded") == counts.succeeded
    assert kinds.count("canceled") == counts.canceled > 0


# -- validation -------------------------------------------------------------------------------


def test_openai_validation_failures(sim: SimulatorProcess, oai: openai.OpenAI) -> None:
    """A bad input file gives a failed batch with line errors; nothing is judged or paid."""
    a, b = pairs(2, "v")
    cases = {
        "duplicate_custom_id": [openai_line("same", a), openai_line("same", b)],
        "mismatched_model": [openai_line("r0", a), openai_line("r1", b, model="gpt-other")],
        "invalid_url": [openai_line("r0", a), openai_line("r1", b, url="/v1/embeddings")],
    }
    for code, lines in cases.items():
        batch = submit(oai, lines)
        assert batch.status == "failed" and batch.failed_at is not None, code
        assert batch.errors is not None and batch.errors.data
        assert [(e.code, e.line) for e in batch.errors.data] == [(code, 2)]
        Batch.model_validate(raw_json(oai.batches.with_raw_response.retrieve(batch.id)))

    sim.configure(batch_fail_validation="invalid_request")
    failed = submit(oai, [openai_line("r0", a)])
    assert failed.status == "failed" and failed.errors and failed.errors.data
    assert failed.errors.data[0].code == "invalid_request"
    assert openai_final(oai, submit(oai, [openai_line("r0", a)]).id).status == "completed"
    assert sim.stats()["batch_lines"] == 1  # only the batch that passed validation


def test_openai_token_limit(sim: SimulatorProcess, oai: openai.OpenAI) -> None:
    """A model's enqueued tokens are capped until its running batches end."""
    lines = [openai_line(f"r{i}", p) for i, p in enumerate(pairs(3, "t"))]
    tokens = sum(len(line["body"]["messages"][0]["content"]) // 4 for line in lines)
    sim.configure(batch_token_limit=tokens + tokens // 2, batch_latency=1.2)
    first = submit(oai, lines)
    refused = submit(oai, lines)
    assert refused.status == "failed" and refused.errors and refused.errors.data
    assert refused.errors.data[0].code == "token_limit_exceeded"
    assert openai_final(oai, first.id).status == "completed"
    second = submit(oai, lines)
    assert second.status != "failed"
    assert openai_final(oai, second.id).status == "completed"


def test_anthropic_rejects_bad_custom_ids(claude: anthropic.Anthropic) -> None:
    good = pairs(1, "b")[0]
    for requests in (
        [anthropic_request("has space", good)],
        [anthropic_request("x" * 65, good)],
        [anthropic_request("dup", good), anthropic_request("dup", good)],
    ):
        with pytest.raises(anthropic.BadRequestError) as raised:
            claude.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        assert raised.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_batch_endpoints_check_the_key(sim: SimulatorProcess) -> None:
    wrong_openai = openai.OpenAI(base_url=sim.openai_base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong_openai.batches.list()
    wrong = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.batches.list()


# -- listing ----------------------------------------------------------------------------------


def test_openai_list_pages_with_metadata(oai: openai.OpenAI) -> None:
    ids = [
        submit(oai, [openai_line("r0", pair)], metadata={"run": str(i)}).id
        for i, pair in enumerate(pairs(5, "l"))
    ]
    page = oai.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    listed = list(oai.batches.list(limit=2))  # auto-paging follows `after`
    assert [b.id for b in listed] == ids[::-1]
    assert [b.metadata for b in listed] == [{"run": str(i)} for i in reversed(range(5))]
    raw = raw_json(oai.batches.with_raw_response.list(limit=2))
    assert raw["object"] == "list" and raw["first_id"] == ids[-1] and raw["last_id"] == ids[-2]
    for item in raw["data"]:
        Batch.model_validate(item)


def test_anthropic_list_pages(claude: anthropic.Anthropic) -> None:
    ids = [
        claude.messages.batches.create(requests=[anthropic_request("r0", pair)]).id  # type: ignore[list-item]
        for pair in pairs(3, "al")
    ]
    newest = ids[::-1]
    page = claude.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest[:2] and page.has_more
    assert (page.first_id, page.last_id) == (newest[0], newest[1])
    assert [b.id for b in claude.messages.batches.list(limit=2)] == newest
    before = claude.messages.batches.list(before_id=newest[2], limit=1)
    assert [b.id for b in before.data] == [newest[1]] and before.has_more
    after = claude.messages.batches.list(after_id=newest[0], limit=5)
    assert [b.id for b in after.data] == newest[1:] and not after.has_more


# -- crash-test holds -------------------------------------------------------------------------


def _holding(sim: SimulatorProcess, kind: str) -> int:
    return int(sim.stats()["holding"][kind])


def test_hold_file_create_stores_nothing_for_a_dead_client(
    sim: SimulatorProcess, oai: openai.OpenAI
) -> None:
    sim.configure(hold_file_create=1.0)
    impatient = oai.with_options(timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        impatient.files.create(file=("requests.jsonl", b"{}\n"), purpose="batch")
    wait_for(lambda: _holding(sim, "file_create") == 1, timeout=0.6)
    wait_for(lambda: _holding(sim, "file_create") == 0)
    assert list(oai.files.list()) == []


def test_hold_batch_create_keeps_the_batch(sim: SimulatorProcess, oai: openai.OpenAI) -> None:
    data = json.dumps(openai_line("r0", pairs(1, "h")[0])).encode()
    uploaded = oai.files.create(file=("requests.jsonl", data), purpose="batch")
    sim.configure(hold_batch_create=1.0)
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.3).batches.create(
            input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
        )
    stats = sim.stats()
    assert stats["holding"]["batch_create"] == 1 and len(stats["batches"]) == 1
    (orphan,) = list(oai.batches.list())  # the provider has it though the caller never saw it
    assert openai_final(oai, orphan.id).status == "completed"
    assert sim.stats()["paid"]["batch"] == 1
    wait_for(lambda: _holding(sim, "batch_create") == 0)


def test_hold_results(
    sim: SimulatorProcess, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    batch = openai_final(oai, submit(oai, [openai_line("r0", pairs(1, "hr")[0])]).id)
    mbatch = claude.messages.batches.create(requests=[anthropic_request("r0", pairs(1, "hm")[0])])  # type: ignore[list-item]
    anthropic_final(claude, mbatch.id)
    sim.configure(hold_results=0.8)
    got: dict[str, Any] = {}
    readers = [
        threading.Thread(target=lambda: got.update(o=jsonl(oai, batch.output_file_id))),
        threading.Thread(target=lambda: got.update(a=results(claude, mbatch.id))),
    ]
    for reader in readers:
        reader.start()
    wait_for(lambda: _holding(sim, "results") >= 2)
    for reader in readers:
        reader.join(10)
    assert set(got["o"]) == {"r0"} and got["a"]["r0"].type == "succeeded"
    assert _holding(sim, "results") == 0


# -- duplicates -------------------------------------------------------------------------------


def test_duplicates_count_pairs_paid_twice(sim: SimulatorProcess, oai: openai.OpenAI) -> None:
    twice, once = pairs(2, "d")
    oai.chat.completions.create(model=GPT, messages=messages(*twice))  # type: ignore[arg-type]
    lines = [openai_line("twice", twice), openai_line("once", once)]
    assert openai_final(oai, submit(oai, lines).id).status == "completed"
    stats = sim.stats()
    assert stats["paid"] == {"sync": 1, "batch": 2} and stats["duplicates"] == 1
    sim.reset()
    stats = sim.stats()
    assert stats["batches"] == [] and stats["paid"] == {"sync": 0, "batch": 0}
    assert stats["duplicates"] == 0 and stats["batch_log"] == []
