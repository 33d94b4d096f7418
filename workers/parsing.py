"""Reply text → Verdict(score, reasoning) or Unparseable(raw, why); never raises, never guesses."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    score: int
    reasoning: str


@dataclass(frozen=True)
class Unparseable:
    raw: str
    why: str


_SCORE_LINE = re.compile(
    r"^[\s>*#_`\-•]*(?:final\s+)?(?:score|rating)\s*[*_`]*\s*[:=\-–]\s*[*_`]*\s*(?P<value>.*)$",
    re.IGNORECASE,
)
_BARE_FRACTION = re.compile(r"^[\s*_`]*(?P<num>\d+)\s*/\s*5[\s*_`.]*$")
_VALUE = re.compile(r"^[\[(]?\s*(?P<num>-?\d+(?:\.\d+)?)\s*[\])]?\s*(?P<rest>.*)$", re.DOTALL)
_DENOM = re.compile(r"^(?:/\s*(?P<d1>\d+)|out\s+of\s+(?P<d2>\d+))", re.IGNORECASE)
_ALTERNATIVE = re.compile(r"^(?:-|–|or|to|and|/)\s*\d", re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL | re.IGNORECASE)
_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_LABEL = re.compile(r"^[\s#*_]*(?:reasoning|explanation|rationale)\s*[*_]*\s*:\s*[*_]*\s*", re.I)


def parse_reply(text: str) -> Verdict | Unparseable:
    """The judge's verdict from free text: the last score line wins; JSON replies are read."""
    try:
        return _parse(text)
    except Exception as exc:  # the contract is "never raises"; a bug becomes Unparseable
        return Unparseable(raw=text, why=f"parser error: {exc!r}")


def _parse(text: str) -> Verdict | Unparseable:
    if not text or not text.strip():
        return Unparseable(raw=text, why="empty reply")
    from_json = _parse_json(text)
    if from_json is not None:
        return from_json
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for position in range(len(lines) - 1, -1, -1):
        line = lines[position]
        match = _SCORE_LINE.match(line)
        value: str | None = None
        if match:
            value = match.group("value")
        else:
            bare = _BARE_FRACTION.match(line)
            if bare and position == _last_nonblank(lines):
                value = bare.group("num") + "/5"
        if value is None:
            continue
        score = _read_value(value)
        if isinstance(score, str):
            return Unparseable(raw=text, why=score)
        reasoning = _clean_reasoning("\n".join(lines[:position]))
        return Verdict(score=score, reasoning=reasoning)
    return Unparseable(raw=text, why="no score found")


def _last_nonblank(lines: list[str]) -> int:
    for position in range(len(lines) - 1, -1, -1):
        if lines[position].strip():
            return position
    return -1


def _read_value(value: str) -> int | str:
    """An int 1..5, or the reason the value is not one."""
    cleaned = value.strip().strip("*_`").strip()
    match = _VALUE.match(cleaned)
    if not match:
        return f"no number after the score label: {value.strip()[:40]!r}"
    number, rest = match.group("num"), match.group("rest").strip().lstrip("*_`").strip()
    denominator = _DENOM.match(rest)
    if denominator:
        if int(denominator.group("d1") or denominator.group("d2")) != 5:
            return f"score on an unknown scale: {value.strip()[:40]!r}"
    elif _ALTERNATIVE.match(rest):
        return f"ambiguous score {value.strip()[:40]!r}"
    try:
        as_float = float(number)
    except ValueError:
        return f"not a number: {number!r}"
    if not as_float.is_integer():
        return f"score {number} is not a whole number"
    score = int(as_float)
    if not 1 <= score <= 5:
        return f"score {score} is outside 1..5"
    return score


def _clean_reasoning(text: str) -> str:
    text = _LABEL.sub("", text.strip())
    return text.strip().strip("*_#").strip()


def _parse_json(text: str) -> Verdict | Unparseable | None:
    stripped = text.strip()
    candidates = [m.group(1) for m in _FENCE.finditer(stripped)]
    if stripped.startswith("{"):
        candidates.append(stripped)
    elif not candidates:
        found = _OBJECT.search(stripped)
        if found and '"score"' in found.group(0):
            candidates.append(found.group(0))
    for candidate in reversed(candidates):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and "score" in data:
            verdict = parse_structured(data)
            return (
                Unparseable(raw=text, why=verdict.why)
                if isinstance(verdict, Unparseable)
                else verdict
            )
    return None


def parse_structured(data: object) -> Verdict | Unparseable:
    """A verdict from a structured reply: an object (or its JSON) with reasoning and score."""
    raw = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, default=str)
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return Unparseable(raw=raw, why="structured reply is not JSON")
    if not isinstance(data, dict):
        return Unparseable(raw=raw, why="structured reply is not an object")
    score = data.get("score")
    if isinstance(score, bool) or score is None:
        return Unparseable(raw=raw, why="structured reply has no score")
    value = _read_value(str(score))
    if isinstance(value, str):
        return Unparseable(raw=raw, why=value)
    reasoning = data.get("reasoning", data.get("reason", data.get("explanation", "")))
    return Verdict(score=value, reasoning=str(reasoning or "").strip())
