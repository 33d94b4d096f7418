"""Prompt rendering, error classification and retry delays."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from workers.errors import ConfigError
from workers.prompt import load_template, render, template_digest
from workers.providers.classify import from_status, retry_after_seconds
from workers.retry import retry_delay


def test_default_prompt_has_rubric_pair_and_score_instruction() -> None:
    text = render("What is 3 times 20?", "It's ${not a var} {60}.")
    assert "<instruction>\nWhat is 3 times 20?\n</instruction>" in text
    assert "It's ${not a var} {60}." in text
    assert "Score: <1-5>" in text
    for level in "12345":
        assert f"\n{level}: " in text


def test_custom_template_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "t.txt"
    good.write_text("Q: $instruction\nA: ${generation}\nScore it.")
    assert render("q", "a", str(good)) == "Q: q\nA: a\nScore it."
    assert template_digest(str(good)) != template_digest()
    bad = tmp_path / "bad.txt"
    bad.write_text("only $instruction")
    load_template.cache_clear()
    with pytest.raises(ConfigError, match="generation"):
        load_template(str(bad))


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (429, "rate_limit", True),
        (500, "server", True),
        (502, "server", True),
        (503, "server", True),
        (529, "overloaded", True),
        (408, "timeout", True),
        (400, "bad_request", False),
        (401, "auth", False),
        (403, "auth", False),
        (404, "not_found", False),
        (422, "bad_request", False),
    ],
)
def test_classification_by_status(status: int, kind: str, retryable: bool) -> None:
    error = from_status(status, "boom", {})
    assert (error.kind, error.retryable, error.status) == (kind, retryable, status)


def test_quota_429_and_context_length_are_permanent() -> None:
    quota = from_status(429, "You exceeded your current quota", {}, "insufficient_quota")
    assert (quota.kind, quota.retryable) == ("quota", False)
    context = from_status(400, "This model's maximum context length is 8192 tokens", {})
    assert (context.kind, context.retryable) == ("context_length", False)


def test_retry_after_forms() -> None:
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    assert from_status(429, "slow down", {"retry-after": "3"}).retry_after == 3.0
    assert from_status(401, "no", {"retry-after": "3"}).retry_after is None


def test_retry_delay_respects_retry_after_and_cap() -> None:
    rng = random.Random(1)
    for attempt in range(10):
        delay = retry_delay(attempt, None, base=1.0, cap=30.0, rng=rng)
        assert 0 < delay <= 30.0
        honoured = retry_delay(attempt, 5.0, base=1.0, cap=30.0, rng=rng)
        assert 5.0 <= honoured <= 6.0
    # full jitter: delays spread out rather than repeat
    assert len({round(retry_delay(3, None, base=1, cap=60, rng=rng), 3) for _ in range(20)}) > 10
