"""Re-parsing without paying: ``ibt reparse`` on a results file, and raw replies in the cache."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from producer import job as jobs
from producer.inputs import Pair
from tests.conftest import OPENAI_MODEL, Cluster
from workers import cache, jobstate
from workers.models import ModelRegistry
from workers.parsing import Verdict, parse_reply

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent


def record(n: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "reasoning": None,
        "score": None,
        "instruction": f"Question {n}",
        "generation": f"Answer {n}",
        "model": "gpt-4o-mini",
    }
    return base | fields | {"id": f"row-{n}"}


# Replies an earlier parser could not read and today's reads, with what it reads.
RECOVERABLE = {
    "Accurate and direct. I would give this a 4 out of 5.": (4, "Accurate and direct."),
    "回答准确。\n评分：５分": (5, "回答准确。"),
    "Partial answer.\n\n## Score\n**2**": (2, "Partial answer."),
}
RECORDS = [
    record(0, reasoning="Fine.", score="5"),
    *(
        record(i, error="unparseable reply: no score found", raw=raw)
        for i, raw in enumerate(RECOVERABLE, start=1)
    ),
    record(4, error="unparseable reply: no score found", raw="I am not sure how to rate this."),
    record(5, error="auth: HTTP 401 invalid key"),
    record(6, error="unparseable reply: ambiguous score '3-4'", raw="Mostly fine.\nScore: 3-4"),
    record(7, error="unparseable reply: no score found"),  # raw not kept: stays as it is
    record(8, reasoning="Off-topic.", score="1"),
]


def ibt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("suffix", "out_suffix"), [(".jsonl", ".json"), (".json", ".jsonl")])
def test_reparse_recovers_what_todays_parser_reads(
    tmp_path: Path, suffix: str, out_suffix: str
) -> None:
    results = tmp_path / f"scored{suffix}"
    if suffix == ".json":
        results.write_text(json.dumps(RECORDS, ensure_ascii=False, indent=2))
    else:
        results.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS))
    fixed = tmp_path / f"fixed{out_suffix}"

    done = ibt("reparse", str(results), "-o", str(fixed))

    assert done.returncode == 0, done.stderr
    assert "reparse: 3 of 6 unparseable records recovered; 3 still unparseable" in done.stderr
    text = fixed.read_text()
    out = json.loads(text) if out_suffix == ".json" else [json.loads(x) for x in text.splitlines()]
    assert [r["id"] for r in out] == [r["id"] for r in RECORDS]  # order kept
    for before, after in zip(RECORDS, out, strict=True):
        raw = before.get("raw")
        if raw in RECOVERABLE:
            score, reasoning = RECOVERABLE[raw]
            assert after == {
                "reasoning": reasoning,
                "score": str(score),
                "instruction": before["instruction"],
                "generation": before["generation"],
                "model": before["model"],
                "id": before["id"],
            }
            assert list(after)[:5] == ["reasoning", "score", "instruction", "generation", "model"]
        else:
            assert after == before


def test_reparse_to_stdout_and_refusals(tmp_path: Path) -> None:
    results = tmp_path / "scored.jsonl"
    results.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS[:2]))
    done = ibt("reparse", str(results))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[1]["score"] == "4"
    assert "reparse: 1 of 1 unparseable records recovered; 0 still unparseable" in done.stderr

    refused = ibt("reparse", str(results), "-o", str(tmp_path / "fixed.txt"))
    assert refused.returncode == 2 and "unknown output extension" in refused.stderr
    (tmp_path / "bad.jsonl").write_text('{"score": null}\n')
    bad = ibt("reparse", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "out.jsonl"))
    assert bad.returncode == 2 and "bad.jsonl:1" in bad.stderr
    assert not (tmp_path / "out.jsonl").exists()


# --- on real parts: the cache keeps raw replies, unparseable ones too ------------------------


def key_of(cluster: Cluster, pair: Pair) -> str:
    spec = ModelRegistry().resolve(OPENAI_MODEL)
    base_url = cluster.simulator.openai_base_url
    return cache.cache_key(spec, base_url, pair.instruction, pair.generation, None)


def run(cluster: Cluster, pairs: list[Pair]) -> jobs.JobResult:
    specs = ModelRegistry().resolve_all([OPENAI_MODEL])
    return jobs.wait(cluster.app, jobs.submit(cluster.app, pairs, specs), poll_interval=0.1)


def test_an_unparseable_reply_is_cached_raw_and_never_paid_again(cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:8]
    pairs = [
        Pair(f"{tag} garbled", "An answer <<sim:garble>>"),
        Pair(f"{tag} scored", "An answer"),
        Pair(f"{tag} off scale", "An answer <<sim:score=8/10>>"),
    ]
    cluster.simulator.reset()
    first = run(cluster, pairs).results
    garbled, scored, off_scale = first
    assert garbled["error"].startswith("unparseable reply") and garbled["raw"]
    assert off_scale["error"].startswith("unparseable reply: score on an unknown scale")
    paid = cluster.simulator.stats()["requests"]
    assert paid == 3

    # The cache holds each reply as received, the unparseable ones included.
    client = jobstate.client_for_url(cluster.url)
    entries = [json.loads(client.get(cache.CACHE_PREFIX + key_of(cluster, p))) for p in pairs]
    assert entries[0] == {"reply": garbled["raw"], "structured": False}
    assert entries[2] == {"reply": off_scale["raw"], "structured": False}
    verdict = parse_reply(entries[1]["reply"])
    assert isinstance(verdict, Verdict) and str(verdict.score) == scored["score"]

    # A fresh worker (nothing in its memory) re-runs the job: every verdict, the unparseable
    # ones too, is parsed from the cached reply; not one call is paid.
    for worker in [w for w in cluster.workers if w[0] == OPENAI_MODEL]:
        worker[1].terminate()
        worker[1].wait(timeout=30)
        cluster.workers.remove(worker)
    cluster.start_worker([OPENAI_MODEL])
    cluster.wait_ready()
    again = run(cluster, pairs)
    assert cluster.simulator.stats()["requests"] == paid
    assert again.results == first
    # The summary counts cached *verdicts*; the two unparseable rows are error rows again.
    assert again.summary["models"][OPENAI_MODEL]["cached"] == 1
