"""Reply parsing over a corpus of judge replies from the wild (tests/data/replies.jsonl).

Each corpus case gives the reply, the expected score (or null) and, for an unparseable
reply, the category of the reason, so a reply refused for the wrong reason fails too.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from workers.parsing import Unparseable, Verdict, parse_reply, parse_structured

CORPUS = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "replies.jsonl").read_text().splitlines()
]
# The reason categories of the corpus and what the parser's ``why`` says for each.
WHY = {
    "empty": r"^empty reply$",
    "no_score": r"^no score found$",
    "refusal": r"^no score found \(the judge declined",
    "truncated": r"^no score found \(the reply ends mid-sentence|ends inside its <think> block",
    "no_number": r"^no number after the score label|^no score in markup",
    "out_of_range": r"^score -?\d+ is outside 1\.\.5$",
    "other_scale": r"^score on an unknown scale",
    "not_whole": r"is not a whole number$",
    "ambiguous": r"^ambiguous score",
    "conflicting": r"^conflicting final verdicts",
    "json_no_score": r"^structured reply has no score$",
}


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 150
    assert len({case["note"] for case in CORPUS}) == len(CORPUS)
    refused = [case for case in CORPUS if case["score"] is None]
    assert len(refused) >= 40
    assert {case["why"] for case in refused} == set(WHY)


@pytest.mark.parametrize("case", CORPUS, ids=[c["note"] for c in CORPUS])
def test_corpus(case: dict[str, Any]) -> None:
    verdict = parse_reply(case["reply"])
    if case["score"] is None:
        assert isinstance(verdict, Unparseable), verdict
        assert verdict.raw == case["reply"]
        assert re.search(WHY[case["why"]], verdict.why), verdict.why
    else:
        assert isinstance(verdict, Verdict), verdict
        assert verdict.score == case["score"]


def test_reasoning_is_the_text_before_the_verdict() -> None:
    verdict = parse_reply("**Reasoning:** Clear, focused and complete.\n\n**Score:** 4")
    assert verdict == Verdict(score=4, reasoning="Clear, focused and complete.")
    revised = parse_reply("Score: 3\nOn reflection, better.\nScore: 4")
    assert isinstance(revised, Verdict) and revised.reasoning.endswith("On reflection, better.")
    assert parse_reply('{"reasoning": "Accurate.", "score": 5}') == Verdict(5, "Accurate.")
    sentence = parse_reply("Correct but terse. I would give this a 4 out of 5.")
    assert sentence == Verdict(4, "Correct but terse.")


def test_reasoning_after_a_leading_verdict_and_outside_the_think_block() -> None:
    assert parse_reply("Score: 4\n\nReasoning: Accurate, a little long.") == Verdict(
        4, "Accurate, a little long."
    )
    thought = parse_reply("<think>Score: 2? No.</think>\nCorrect.\nScore: 5")
    assert thought == Verdict(5, "Correct.")


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


# --- properties: the two rules over every accepted form ---------------------------------------

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
# One clear verdict of score n in each accepted form (docs/parsing.md lists them).
FORMS = [
    "Score: {n}",
    "**Score:** {n}",
    "**Score: {n}**",
    "Score: {n}/5",
    "Rating: {n} out of 5",
    "Final score: {n}",
    "Overall Score: {n}/5",
    "## Score\n{n}",
    "**Score:**\n**{n}**",
    "| Overall | {n} |",
    "| Criterion | Overall |\n|---|---|\n| all | {n} |",
    "I would give this a {n} out of 5.",
    "I'd rate it a {n}.",
    "The final score is {n}.",
    "This response deserves a {n}.",
    '{{"reasoning": "ok", "score": {n}}}',
    '```json\n{{"reasoning": "ok", "score": {n}}}\n```',
    "<score>{n}</score>",
    "\\boxed{{{n}}}",
    "Rating: [[{n}]]",
    "评分：{n}",
    "评分：{n}分",
    "スコア：{w}",
    "Note : {n}",
    "Puntuación: {n}",
    "{n}/5",
]
# Reasoning as judges write it: words, numbers and punctuation, none of it a verdict.
VOCABULARY = (
    "the answer is correct wrong helpful concise verbose it says 60 3 x 20 = 59 not quite "
    "because user asked for a list of steps and gives two examples score rating 1 to 5 "
    "scale rubric 回答 准确 答え 4 points , . ; : ! ? ( ) -"
)
WORDS = st.sampled_from([*VOCABULARY.split(), "\n"])
REASONING = st.lists(WORDS, max_size=40).map(" ".join)


def reply(reasoning: str, form: str, n: int) -> str:
    return f"{reasoning}\n{form.format(n=n, w=str(n).translate(FULL_WIDTH))}"


@settings(max_examples=300, deadline=None)
@given(REASONING, st.sampled_from(FORMS), st.integers(1, 5))
def test_a_clear_verdict_after_any_reasoning_is_read(reasoning: str, form: str, n: int) -> None:
    alone = parse_reply(reasoning)
    assume(isinstance(alone, Unparseable) and alone.why.startswith("no score found"))
    text = reply(reasoning, form, n)
    got = parse_reply(text)
    assert isinstance(got, Verdict) and got.score == n, (text, got)


@settings(max_examples=300, deadline=None)
@given(
    REASONING,
    st.sampled_from([f for f in FORMS if f != "{n}/5"]),
    st.sampled_from(FORMS),
    st.integers(1, 5),
    st.integers(1, 4),
    st.sampled_from(["\n", "\n\n", "\n\n---\n\n"]),
)
def test_two_conflicting_final_verdicts_are_never_a_score(
    reasoning: str, first: str, second: str, n: int, shift: int, gap: str
) -> None:
    # Two tables one line apart are one table, whose rows are per-criterion scores.
    assume(not (gap == "\n" and "|" in first and second.startswith("|")))
    m = (n - 1 + shift) % 5 + 1
    text = reply(reasoning, first, n) + gap + second.format(n=m, w=str(m).translate(FULL_WIDTH))
    result = parse_reply(text)
    assert isinstance(result, Unparseable), (text, result)
    assert result.why.startswith("conflicting final verdicts"), (text, result.why)


# --- the plain-reply fast path agrees with the full search ----------------------------------

PLAIN_TAILS = ["Score: 4", "**Score:** 2", "score: 5", "SCORE:3  ", "**Score: 1**", "Score : 4"]


def _full(text: str) -> Verdict | Unparseable:
    """What the full search alone makes of ``text``."""
    import workers.parsing as parsing

    plain, parsing._plain = parsing._plain, lambda _text: None  # type: ignore[assignment]
    try:
        return parse_reply(text)
    finally:
        parsing._plain = plain  # type: ignore[assignment]


def test_the_fast_path_agrees_with_the_full_search_on_the_corpus() -> None:
    import workers.parsing as parsing

    taken = 0
    for case in CORPUS:
        fast = parsing._plain(case["reply"])
        if fast is not None:
            taken += 1
            assert fast == _full(case["reply"]), case["note"]
    assert taken >= 3  # the corpus has plain replies too


@settings(max_examples=300, deadline=None)
@given(
    prose=st.text(min_size=1, max_size=300)
    | st.text(st.sampled_from(string.ascii_letters + " .,;:!?'-*_#\n"), min_size=1, max_size=300),
    tail=st.sampled_from(PLAIN_TAILS),
)
def test_the_fast_path_agrees_with_the_full_search_on_any_prose(prose: str, tail: str) -> None:
    import workers.parsing as parsing

    text = f"{prose}\n{tail}"
    fast = parsing._plain(text)
    if fast is not None:
        assert fast == _full(text)


def test_the_fast_path_takes_the_simulators_reply() -> None:
    import workers.parsing as parsing

    text = "Simulated judge x: a deterministic stand-in, not a real judgement.\nScore: 4"
    assert parsing._plain(text) == _full(text) == Verdict(4, text.split("\n")[0])
