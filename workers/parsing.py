"""Reply text → Verdict(score, reasoning) or Unparseable(raw, why); never raises, never guesses.

Two rules decide every reply: the *final* verdict wins (a judge that revises itself means the
last one), and a reply is never guessed at: a range, two different final verdicts, a score
on another scale or outside 1..5 is Unparseable with the reason. Every accepted form, with an
example, and every refusal are listed in docs/parsing.md; the corpus in
tests/data/replies.jsonl holds the replies behind them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    score: int
    reasoning: str


@dataclass(frozen=True)
class Unparseable:
    raw: str
    why: str


@dataclass(frozen=True)
class _Candidate:
    """One verdict form found in the reply: where it is, and its score or why it has none."""

    start: int
    end: int
    score: int | str
    reasoning: str = ""  # a JSON verdict's own reasoning field


# Full-width ASCII (ＳＣＯＲＥ：４) read as ASCII, one character for one, so offsets into the
# folded text are offsets into the reply.
_FOLD = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_NUMBER = r"(?:[-+−]?\d+(?:[.,]\d+)?|one(?!\s+an?\b)|two|three|four|five)"
# The end of a number: "4分" and "4점" are numbers with a unit, "4th" and "fourteen" are not.
_END = r"(?![A-Za-z\d])"
_VALUE = re.compile(rf"^[\[(]*\s*(?P<num>{_NUMBER}){_END}\s*[\])]*(?P<rest>.*)$", re.I | re.S)
# "5点満点中4点" (Japanese), "5점 만점에 4점" (Korean): the scale comes before the score.
_SCALE_FIRST = re.compile(r"^(?P<den>\d+)\s*(?:点満点中|点満点で|점\s*만점에?)\s*(?P<num>\d+)")
_DENOMINATOR = re.compile(
    r"^[\s*_`]*\(?\s*(?:/|⁄|out\s+of|of|sur|von|su|de|из)\s*(?P<den>\d+|five|ten)\b"
    r"|^[\s*_`]*分?\s*\(?\s*(?:满分|滿分)\s*(?P<den2>\d+)",
    re.I,
)
_ALTERNATIVE = re.compile(
    rf"^[\s*_`]*\(?\s*(?:-|–|—|~|〜|or|to|and|ou|o|oder|или|或|到|至)\s*"
    rf"(?:maybe|perhaps|possibly|even|a|an)?\s*{_NUMBER}{_END}",
    re.I,
)
_BETWEEN = re.compile(
    rf"^(?:somewhere\s+)?(?:between|entre|zwischen|介于|在)\s*(?:an?\s+)?{_NUMBER}\s*"
    rf"(?:and|et|y|und|和|与|到)\s*(?:an?\s+)?{_NUMBER}",
    re.I,
)
_LATEX = re.compile(r"^\$*\\boxed\{(.*?)\}\$*")
_HALF = re.compile(r"^\s*(?:and\s+a\s+half|½|\+)", re.I)
# What may follow the number of a verdict stated in a sentence (or under a weak label), so
# "give this 2 thumbs up" or "Note: 3 of the steps" are not read as verdicts.
_TAIL = re.compile(
    r"^\s*(?:$|[.,;:!?)\]}\"'*_`~—–\-|。，；！？」』）、]|分|点|점"
    r"|(?:because|since|as|given|due|overall|rather|instead|but|here|based|which|considering"
    r"|reflecting|points?|pts|stars?|punkte?n?|punti|puntos|étoiles)\b"
    r"|on\s+(?:the|this|a|our|your)\b[^.]*\b(?:scale|rubric)"
    r"|(?:is|seems|feels|would\s+be)\s+(?:most\s+)?(?:appropriate|fair|warranted|justified"
    r"|reasonable|right|suitable|deserved)\b)",
    re.I,
)

_STRONG = (
    r"(?:(?:my|the)\s+)?(?:(?:final|overall|total|revised|updated)\s+)?(?:score|rating)"
    r"|最终评分|最終評分|评分|評分|得分|分数|分數|总分|総合スコア|スコア|点数|최종\s*점수|점수|평점"
    r"|gesamtpunktzahl|punktzahl|puntuaci[oó]n(?:\s+final)?|puntaje(?:\s+final)?"
    r"|punteggio(?:\s+finale)?|pontua[cç][aã]o(?:\s+final)?|итоговый\s+балл|балл"
)
# Words that also start ordinary lines ("Note: ...", "Overall: a solid answer"): a line with
# one of them is a verdict only when a number follows it at once.
_WEAK = (
    r"final\s+(?:verdict|grade|answer)|verdict|grade"
    r"|overall(?:\s+(?:assessment|verdict|grade|evaluation))?"
    r"|note(?:\s+finale)?|nota(?:\s+final)?|gesamtbewertung|bewertung|endnote"
    r"|calificaci[oó]n(?:\s+final)?|valutazione(?:\s+finale)?|voto|évaluation"
    r"|итоговая\s+оценка|оценка|総合評価|評価|评价|评级|總評|总评"
)
_SCALE_NOTE = r"\s*\(\s*(?:1\s*(?:-|–|to|~)\s*5|out\s+of\s+5|/\s*5)\s*\)"
_LABEL_LINE = re.compile(
    rf"^[^\w]*+(?:\d+[.)]\s+)?[*_`]*+[【\[]?(?:(?P<strong>{_STRONG})|(?P<weak>{_WEAK}))[】\]]?"
    rf"(?![a-zà-ÿ])(?:{_SCALE_NOTE})?\s*[*_`]*\s*(?P<sep>[:=\-–—]?)\s*[*_`]*\s*(?P<value>.*)$",
    re.I,
)
_CELL_LABEL = re.compile(rf"^(?:(?P<strong>{_STRONG})|(?P<weak>{_WEAK}))(?:{_SCALE_NOTE})?$", re.I)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}")
_FRACTION_LINE = re.compile(r"^[^\w]*(?P<value>\d+\s*/\s*\d+)[^\w]*$")

_ARTICLE = r"(?:an?\s+)?"
_NOUN_OF = r"(?:(?:final\s+|overall\s+)?(?:score|rating|grade|mark)\s+(?:of\s+)?)?"
_OBJECT_WORD = r"(?!(?:an?|score|rating|as|at)\b)[^\W\d_]+"
_VALUE_GROUP = rf"(?P<value>(?:(?:somewhere\s+)?between\s+)?{_NUMBER}){_END}"
_SENTENCES = [
    re.compile(p + _VALUE_GROUP, re.I)
    for p in (
        # "I would give this a 4 out of 5", "I'd rate the response 3/5", "put it at a 4"
        r"\b(?:give|giving|rate|rating|score|scoring|assign|assigning|award|awarding|grade|put)"
        rf"\s+(?:(?:this|it|that|the|its)(?:\s+{_OBJECT_WORD}){{0,2}}\s+)?(?:(?:as|at)\s+)?"
        rf"{_ARTICLE}{_NOUN_OF}{_ARTICLE}",
        # "The final score is 4", "my rating would be a 4"
        r"\b(?:the|my|its|this|our)\s+(?:(?:final|overall|total)\s+)?(?:score|rating|grade|verdict)"
        r"(?:\s+(?:for|of)\s+(?:this|the)\s+\w+(?:\s+answer)?)?"
        r"\s+(?:is|would\s+be|will\s+be|should\s+be|stands\s+at|comes\s+to)\s*:?\s+"
        rf"{_ARTICLE}(?:(?:solid|strong|clear)\s+)?",
        # "This answer deserves a 4", "it earns a solid 4/5"
        rf"\b(?:deserves?|earns?|merits?|warrants?|gets?|receives?|scores?)\s+{_ARTICLE}"
        rf"(?:(?:solid|strong|weak|low|high|full|perfect|clear)\s+)?{_NOUN_OF}",
        # "I'd say it's a 4"
        r"\bsay\s+(?:it'?s|it\s+is|this\s+is|that'?s|this\s+(?:answer|response)\s+is)\s+"
        rf"{_ARTICLE}(?:(?:solid|strong|clear)\s+)?",
        # "a score of 4 is appropriate"
        r"\b(?:a\s+)?(?:score|rating)\s+of\s+(?=\d\s+(?:is|seems|feels|would\s+be)\s+(?:most\s+)?"
        r"(?:appropriate|fair|warranted|justified|reasonable|right|suitable|deserved)\b)",
        # French, Spanish, German
        r"\bje\s+(?:donne|donnerais|attribue|attribuerais|mets|mettrais)\s+"
        r"(?:(?:à\s+)?(?:cette|la)\s+réponse\s+)?(?:une\s+note\s+de\s+|la\s+note\s+(?:de\s+)?)?",
        r"\bla\s+note\s+(?:finale\s+)?(?:est|serait)\s+(?:de\s+)?",
        r"\b(?:le\s+)?(?:daría|doy|otorgo|otorgaría|asigno|asignaría|pondría)\s+"
        r"(?:a\s+esta\s+respuesta\s+)?(?:una?\s+)?(?:(?:puntuación|calificación|nota)\s+de\s+)?",
        r"\bla\s+(?:puntuación|calificación|nota)\s+(?:final\s+)?(?:es|sería)\s+(?:de\s+)?(?:una?\s+)?",
        r"\bich\s+(?:gebe|würde|vergebe)\s+(?:(?:der|dieser)\s+antwort\s+|ihr\s+)?(?:(?:eine|die)\s+)?"
        r"(?:(?:bewertung|punktzahl|note)\s+(?:von\s+)?)?",
        # Chinese, Japanese, Korean: "我给这个回答打4分", "評価は4点です", "점수는 4점입니다"
        r"(?:给出?|给予|打|评为|评定为|评分为|得分为|得分是|评分是|分数为|分数是)\s*",
        r"(?:評価|スコア|点数|得点)(?:は|を)\s*",
        r"(?:점수|평점)(?:는|은|를)\s*",
    )
]
# Verdict forms that are markup rather than prose: LaTeX's \boxed{4}, MT-Bench's [[4]],
# an XML <score>4</score>.
_MARKUP_FORMS = [
    re.compile(r"\\boxed\{\s*(?:\\text\{)?(?P<value>[^{}]*?)\}?\s*\}"),
    re.compile(r"\[\[\s*(?P<value>\d+(?:\.\d+)?(?:\s*/\s*\d+)?)\s*\]\]"),
    re.compile(r"<(?P<tag>score|rating|final_score)>\s*(?P<value>[^<]*?)\s*</(?P=tag)>", re.I),
]
# A verdict stated inside a hypothetical or a negation is not one: "if it had examples I
# would give it a 5", "I would not give it a 5".
_HYPOTHETICAL = re.compile(
    r"\b(?:if|unless|would\s+have|could\s+have|should\s+have|might|were|not|never|cannot"
    r"|si|wenn|falls|nicht|ne)\b|n[’']t\b|如果|若|不",
    re.I,
)
_CLAUSE_END = re.compile(r"[.!?;。！？]\s|,\s*but\s|\bbut\s", re.I)
_JSON_KEYS = ("final_score", "overall_score", "overall", "score", "rating")
_THINK_OPEN = re.compile(r"<(think|thinking)>", re.I)
_THINK_CLOSE = re.compile(r"</(?:think|thinking)>", re.I)
_GAP_MARKUP = re.compile(r"(?:```[\w-]*|[\s*_#`>|\-=~:.,;!()\[\]{}$])+")
_REFUSAL = re.compile(
    r"\b(?:I\s*(?:'m|’m|\s+am)\s+(?:sorry|unable|not\s+able)|I\s+(?:cannot|can[’']t|won[’']t|will\s+not)"
    r"|as\s+an\s+AI|I\s+must\s+decline|unable\s+to\s+(?:evaluate|assess|rate|score))",
    re.I,
)
_ENDS_SENTENCE = re.compile(r"[.!?。！？…)\]}\"'”’*`>|\d]\s*$")
_LABEL = re.compile(
    r"^[\s#*_]*(?:reasoning|explanation|rationale|evaluation|analysis)\s*[*_]*\s*:\s*[*_]*\s*", re.I
)
_TAGS = re.compile(r"</?(?:reasoning|explanation|evaluation|answer)>", re.I)


def parse_reply(text: str) -> Verdict | Unparseable:
    """The judge's verdict from free text: the final verdict form wins; JSON replies are read."""
    try:
        return _parse(text)
    except Exception as exc:  # the contract is "never raises"; a bug becomes Unparseable
        return Unparseable(raw=text, why=f"parser error: {exc!r}")


# The reply most judges send: prose, then a last line "Score: N". When the prose holds nothing
# any verdict form could be built from (no digit, no number word, no JSON, table or markup),
# that line is the only candidate, so the full search (~0.3 ms, ten times this) would find it
# alone; tests/test_parsing.py checks that both agree on every reply this path takes.
_PLAIN_LAST_LINE = re.compile(
    r"\n[ \t]*(?:\*\*)?score(?:\*\*)?[ \t]*:[ \t]*(?:\*\*)?([1-5])(?:\*\*)?[ \t]*$", re.I
)
_NOTHING_TO_READ = re.compile(
    r"[\d{}\[\]|<>\\]|\b(?:one|two|three|four|five|ten|score|rating|rate|grade|mark|points?)\b",
    re.I,
)


def _plain(text: str) -> Verdict | None:
    """The verdict of a plain "prose, then Score: N" reply, or None (take the full search)."""
    if not text.isascii():
        return None
    last = _PLAIN_LAST_LINE.search(text.rstrip())
    if last is None:
        return None
    body = text[: last.start()]
    if not body.strip() or _NOTHING_TO_READ.search(body):
        return None
    reasoning = _clean_reasoning(body)
    return Verdict(score=int(last.group(1)), reasoning=reasoning) if reasoning else None


def _parse(text: str) -> Verdict | Unparseable:
    if not text or not text.strip():
        return Unparseable(raw=text, why="empty reply")
    plain = _plain(text)
    if plain is not None:
        return plain
    closes = list(_THINK_CLOSE.finditer(text))
    offset = closes[-1].end() if closes else 0
    opened = _THINK_OPEN.search(text, offset)
    if opened and not _THINK_CLOSE.search(text, opened.end()):
        return Unparseable(raw=text, why="the reply ends inside its <think> block (truncated?)")
    answer = text[offset:]
    folded = answer.translate(_FOLD)
    block = _final_block(folded, _candidates(folded))
    if not block:
        return Unparseable(raw=text, why=_no_score_why(answer))
    final = block[-1]
    scores = {c.score for c in block}
    if len(scores) > 1:
        shown = " and ".join(
            repr(c.score) if isinstance(c.score, str) else str(c.score) for c in block
        )
        return Unparseable(raw=text, why=f"conflicting final verdicts: {shown}")
    if isinstance(final.score, str):
        return Unparseable(raw=text, why=final.score)
    reasoning = final.reasoning or _clean_reasoning(answer[: block[0].start])
    if not reasoning:
        reasoning = _clean_reasoning(answer[final.end :])
    return Verdict(score=final.score, reasoning=reasoning)


def _no_score_why(answer: str) -> str:
    refusal = _REFUSAL.search(answer)
    if refusal:
        sentence = answer[refusal.start() :].strip().split("\n")[0][:60]
        return f"no score found (the judge declined: {sentence!r})"
    last_line = answer.strip().split("\n")[-1]
    if len(last_line) >= 30 and not _ENDS_SENTENCE.search(last_line):
        return "no score found (the reply ends mid-sentence: cut off?)"
    return "no score found"


def _final_block(text: str, candidates: list[_Candidate]) -> list[_Candidate]:
    """The last verdict and those right before it with nothing but markup in between: a
    judge's closing statement, whose verdicts must agree."""
    kept: list[_Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.start, -c.end)):
        if kept and kept[-1].start <= c.start and c.end <= kept[-1].end:
            continue  # a sentence inside a score line or a JSON object: the larger form counts
        kept.append(c)
    if not kept:
        return []
    block = [kept[-1]]
    for previous in reversed(kept[:-1]):
        if _GAP_MARKUP.sub("", text[previous.end : block[0].start]):
            break
        block.insert(0, previous)
    return block


def _candidates(text: str) -> list[_Candidate]:
    found = _json_candidates(text)
    lines = text.split("\n")
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        found.extend(_line_candidates(lines, starts, i, last))
        found.extend(_sentence_candidates(line, starts[i]))
    for pattern in _MARKUP_FORMS:
        for match in pattern.finditer(text):
            score = _read_value(match.group("value"), strict=False)
            found.append(_Candidate(match.start(), match.end(), score or "no score in markup"))
    found.extend(_table_candidates(lines, starts))
    return found


def _line_candidates(lines: list[str], starts: list[int], i: int, last: int) -> list[_Candidate]:
    line = lines[i]
    span = (starts[i], starts[i] + len(line))
    if line.lstrip().startswith("|"):
        return _table_row(line, span)
    fraction = _FRACTION_LINE.match(line)
    if fraction and i == last:
        return [_Candidate(*span, _read_value(fraction.group("value"), strict=False) or "")]
    match = _LABEL_LINE.match(line)
    if not match:
        return []
    strong = match.group("strong") is not None
    value = match.group("value").strip().strip("*_`#").strip()
    if not value:  # "## Score" or "**Score:**" with the value on the next line
        following = next((j for j in range(i + 1, len(lines)) if lines[j].strip()), None)
        if following is not None:
            below = _read_value(lines[following].strip().strip("*_`#>"), strict=True)
            if below is not None:
                return [_Candidate(span[0], starts[following] + len(lines[following]), below)]
        if strong and match.group("sep"):
            return [_Candidate(*span, "no number after the score label")]
        return []
    # A label run into its number ("Final Score 4/5") must be followed by a plain number.
    strict = not strong or not match.group("sep")
    score = _read_value(value, strict=strict)
    return [] if score is None else [_Candidate(*span, score)]


def _table_row(line: str, span: tuple[int, int]) -> list[_Candidate]:
    """``| Overall | 4/5 |``: a row whose first cell is a verdict label."""
    cells = [c.strip().strip("*_`").strip() for c in line.strip().strip("|").split("|")]
    if len(cells) < 2:
        return []
    label = _CELL_LABEL.match(cells[0])
    if not label:
        return []
    score = _read_value(cells[1], strict=label.group("strong") is None)
    return [] if score is None else [_Candidate(*span, score)]


def _table_candidates(lines: list[str], starts: list[int]) -> list[_Candidate]:
    """A table with a verdict column and one data row: ``| Accuracy | Overall |``, ``| 5 | 4 |``."""
    found = []
    for i in range(len(lines) - 2):
        header, rule = lines[i], lines[i + 1]
        if not (header.lstrip().startswith("|") and _TABLE_RULE.match(rule)):
            continue
        rows = []
        for line in lines[i + 2 :]:
            if not line.lstrip().startswith("|"):
                break
            rows.append(line)
        cells = [c.strip().strip("*_`").strip() for c in header.strip().strip("|").split("|")]
        columns = [k for k, cell in enumerate(cells) if _CELL_LABEL.match(cell)]
        if len(rows) != 1 or len(columns) != 1:
            continue
        row = [c.strip().strip("*_`").strip() for c in rows[0].strip().strip("|").split("|")]
        if columns[0] < len(row):
            score = _read_value(row[columns[0]], strict=True)
            if score is not None:
                end = starts[i + 2] + len(rows[0])
                found.append(_Candidate(starts[i], end, score))
    return found


def _sentence_candidates(line: str, offset: int) -> list[_Candidate]:
    """Verdicts stated in a sentence; each spans its clause, up to its number and scale."""
    found = []
    for pattern in _SENTENCES:
        for match in pattern.finditer(line):
            clause = 0
            for boundary in _CLAUSE_END.finditer(line, 0, match.start()):
                clause = boundary.end()
            if _HYPOTHETICAL.search(line, clause, match.start()):
                continue
            score = _read_value(line[match.start("value") :], strict=True)
            if score is None:
                continue
            scale = _DENOMINATOR.match(line[match.end() :])
            end = match.end() + (scale.end() if scale else 0)
            found.append(_Candidate(offset + clause, offset + end, score))
    return found


def _json_candidates(text: str) -> list[_Candidate]:
    """Every JSON object in the reply (bare, in prose or in a code fence) with a score key."""
    decoder = json.JSONDecoder()
    found = []
    position = text.find("{")
    while position != -1:
        try:
            data, end = decoder.raw_decode(text, position)
        except ValueError:
            position = text.find("{", position + 1)
            continue
        if isinstance(data, dict):
            verdict = _from_object(data)
            if verdict is not None:
                score = verdict.why if isinstance(verdict, Unparseable) else verdict.score
                reasoning = verdict.reasoning if isinstance(verdict, Verdict) else ""
                found.append(_Candidate(position, end, score, reasoning))
        position = text.find("{", end)
    return found


def _from_object(data: dict[str, Any]) -> Verdict | Unparseable | None:
    """The verdict of a JSON object that has a score key (directly or one level down)."""
    key = next((k for k in _JSON_KEYS if k in data), None)
    if key is None:
        nested = [v for v in data.values() if isinstance(v, dict)]
        return _from_object(nested[0]) if len(nested) == 1 else None
    score = data[key]
    raw = json.dumps(data, ensure_ascii=False, default=str)
    if isinstance(score, bool) or score is None or isinstance(score, dict | list):
        return Unparseable(raw=raw, why="structured reply has no score")
    return _object_verdict(data, score, raw)


def _object_verdict(data: dict[str, Any], score: object, raw: str) -> Verdict | Unparseable:
    """A JSON verdict's score value read as any score is, with its reasoning field."""
    value = _read_value(str(score), strict=False)
    if not isinstance(value, int):
        return Unparseable(raw=raw, why=value or "structured reply has no score")
    reasoning = data.get("reasoning", data.get("reason", data.get("explanation", "")))
    return Verdict(score=value, reasoning=str(reasoning or "").strip())


def _read_value(value: str, *, strict: bool) -> int | str | None:
    """An int 1..5, the reason the value is not one, or (``strict``) None when the text
    after the number shows it is not a verdict at all."""
    shown = value.strip()[:40]
    cleaned = _LATEX.sub(r"\1", value.strip().strip("*_`").strip())
    if _BETWEEN.match(cleaned):
        return f"ambiguous score {shown!r}"
    scale_first = _SCALE_FIRST.match(cleaned)
    if scale_first:
        if scale_first.group("den") != "5":
            return f"score on an unknown scale: {shown!r}"
        cleaned = scale_first.group("num") + cleaned[scale_first.end() :]
    match = _VALUE.match(cleaned)
    if not match:
        return None if strict else f"no number after the score label: {shown!r}"
    number, rest = match.group("num"), match.group("rest")
    if _HALF.match(rest):
        return f"score {shown!r} is not a whole number"
    if _ALTERNATIVE.match(rest):
        return f"ambiguous score {shown!r}"
    denominator = _DENOMINATOR.match(rest)
    if denominator:
        if (denominator.group("den") or denominator.group("den2")).lower() not in ("5", "five"):
            return f"score on an unknown scale: {shown!r}"
        rest = rest[denominator.end() :]
    if strict and not _TAIL.match(rest.lstrip("*_` ")):
        return None
    as_text = number.lower().replace(",", ".").replace("−", "-")
    as_float = float(_WORDS.get(as_text, as_text))
    if not as_float.is_integer():
        return f"score {number} is not a whole number"
    score = int(as_float)
    if not 1 <= score <= 5:
        return f"score {score} is outside 1..5"
    return score


def _clean_reasoning(text: str) -> str:
    text = _TAGS.sub("", text).strip()
    text = _LABEL.sub("", text)
    return text.strip().strip("*_#$").strip()


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
    return _object_verdict(data, score, raw)
