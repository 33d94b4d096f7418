"""Reply parsing over a corpus of realistic judge replies (tests/data/replies.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.parsing import Unparseable, Verdict, parse_reply, parse_structured

CORPUS = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "replies.jsonl").read_text().splitlines()
]


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 40
    assert sum(case["score"] is None for case in CORPUS) >= 12


@pytest.mark.parametrize("case", CORPUS, ids=[c["note"] for c in CORPUS])
def test_corpus(case: dict[str, Any]) -> None:
    verdict = parse_reply(case["reply"])
    if case["score"] is None:
        assert isinstance(verdict, Unparseable), verdict
        assert verdict.raw == case["reply"]
        assert verdict.why
    else:
        assert isinstance(verdict, Verdict), verdict
        assert verdict.score == case["score"]


def test_reasoning_is_the_text_before_the_score() -> None:
    verdict = parse_reply("**Reasoning:** Clear, focused and complete.\n\n**Score:** 4")
    assert verdict == Verdict(score=4, reasoning="Clear, focused and complete.")
    revised = parse_reply("Score: 3\nOn reflection, better.\nScore: 4")
    assert isinstance(revised, Verdict) and revised.reasoning.endswith("On reflection, better.")
    assert parse_reply('{"reasoning": "Accurate.", "score": 5}') == Verdict(5, "Accurate.")


@pytest.mark.parametrize(
    ("data", "score"),
    [
        ({"reasoning": "ok", "score": 3}, 3),
        ('{"reasoning": "ok", "score": 2}', 2),
        ({"reasoning": "ok", "score": "5"}, 5),
        ({"reasoning": "ok", "score": 0}, None),
        ({"reasoning": "ok", "score": True}, None),
        ({"reasoning": "ok"}, None),
        (["not", "an", "object"], None),
        ("not json", None),
    ],
)
def test_structured(data: object, score: int | None) -> None:
    verdict = parse_structured(data)
    if score is None:
        assert isinstance(verdict, Unparseable)
    else:
        assert isinstance(verdict, Verdict) and verdict.score == score


@given(st.text())
def test_never_raises_on_any_text(text: str) -> None:
    result = parse_reply(text)
    assert isinstance(result, Verdict | Unparseable)
    if isinstance(result, Verdict):
        assert 1 <= result.score <= 5


@given(st.text(), st.sampled_from(["Score: ", "**Score:** ", "4/5", '{"score": ', "Score: 4"]))
def test_never_raises_on_score_like_text(prefix: str, fragment: str) -> None:
    result = parse_reply(prefix + "\n" + fragment)
    assert isinstance(result, Verdict | Unparseable)
