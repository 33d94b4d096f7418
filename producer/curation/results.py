"""Results files as ``ibt score`` writes them: reading, validating, one record at a time.

A results file is a JSON array or JSON Lines (detected from the content, so the extension
does not matter; ``-`` reads stdin). Records are validated as they are read; a bad one raises
:class:`InputError` naming the file, the line and the field.

Both forms are streamed (a JSON array in 1 MiB chunks), so a file of 10^7 records never
has 10^7 records in memory: :func:`iter_records` yields them one at a time and
:func:`iter_pairs` groups the consecutive records of each pair, the order ``ibt score``
writes (pair, then model).
"""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, BinaryIO

from producer.inputs import json_type_name
from workers.errors import InputError

SCORES = (1, 2, 3, 4, 5)
REQUIRED_KEYS = ("reasoning", "score", "instruction", "generation", "model")
# What one judge said about a pair. Every other key of a record (``id``, ``source``, ...) is a
# field of the pair's input, carried through by ``ibt score``; keys starting with ``_`` are
# internal and dropped.
JUDGE_KEYS = frozenset(
    {"reasoning", "score", "model", "error", "raw", "input_tokens", "output_tokens", "samples"}
)
NO_FIELDS: Mapping[str, Any] = MappingProxyType({})


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class JudgeRecord:
    """One (pair, model) result: a score 1..5, or an error (``score`` None, ``error`` set)."""

    instruction: str
    generation: str
    model: str
    score: int | None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    line: int | None = None
    reasoning: str | None = None
    # ``ibt score --samples N``: the N sample scores behind ``score`` (None: unparseable).
    samples: tuple[int | None, ...] | None = None
    # The pair's other input fields, in record order (not hashed: a mapping has no hash).
    fields: Mapping[str, Any] = field(default_factory=lambda: NO_FIELDS, hash=False)

    @property
    def error_kind(self) -> str | None:
        return None if self.score is not None else error_kind(self.error)


def error_kind(error: str | None) -> str:
    """The kind of an error string: the text before its first colon (``rate_limit: ...``)."""
    if not error or not error.strip():
        return "unknown"
    kind = error.split(":", 1)[0].strip()
    return kind or "unknown"


def parse_record(raw: Any, *, source: str, line: int | None = None) -> JudgeRecord:
    """Validate one record of a results file; errors name ``source``, ``line`` and field."""
    if not isinstance(raw, Mapping):
        raise InputError(
            f"expected a JSON object, got {json_type_name(raw)}", source=source, line=line
        )
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise InputError("missing", source=source, line=line, field=key)
    for key in ("instruction", "generation", "model"):
        if not isinstance(raw[key], str):
            raise InputError(
                f"must be a string, got {json_type_name(raw[key])}",
                source=source,
                line=line,
                field=key,
            )
    if not raw["model"].strip():
        raise InputError("must not be empty", source=source, line=line, field="model")
    score = _parse_score(raw["score"], source=source, line=line)
    error = raw.get("error") if score is None else None  # a scored record has no error
    tokens = [_parse_tokens(raw, key, source=source, line=line) for key in _TOKEN_KEYS]
    fields = {
        key: value
        for key, value in raw.items()
        if key not in JUDGE_KEYS
        and key not in ("instruction", "generation")
        and not str(key).startswith("_")
    }
    return JudgeRecord(
        instruction=raw["instruction"],
        generation=raw["generation"],
        model=raw["model"],
        score=score,
        error=error if isinstance(error, str) else None,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        line=line,
        reasoning=raw["reasoning"] if isinstance(raw["reasoning"], str) else None,
        samples=_parse_samples(raw.get("samples"), source=source, line=line),
        fields=fields or NO_FIELDS,  # most files have none: share one empty mapping
    )


_TOKEN_KEYS = ("input_tokens", "output_tokens")


def _parse_samples(value: Any, *, source: str, line: int | None) -> tuple[int | None, ...] | None:
    if value is None:
        return None
    if isinstance(value, list) and all(
        item is None or (type(item) is int and item in SCORES) for item in value
    ):
        return tuple(value)
    raise InputError(
        f"must be a list of scores 1..5 or null, got {value!r}",
        source=source,
        line=line,
        field="samples",
    )


def _parse_score(value: Any, *, source: str, line: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip() in ("1", "2", "3", "4", "5"):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in SCORES:
        return value
    raise InputError(
        f'must be "1".."5" or null, got {value!r}', source=source, line=line, field="score"
    )


def _parse_tokens(raw: Mapping[str, Any], key: str, *, source: str, line: int | None) -> int:
    value = raw.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(
            f"must be a non-negative integer, got {value!r}", source=source, line=line, field=key
        )
    return value


# --------------------------------------------------------------------------- loading

CHUNK = 1 << 20


def iter_records(path: str) -> Iterator[JudgeRecord]:
    """The records of a results file, one at a time (``-`` reads stdin).

    Raises :class:`InputError` at the first bad record or syntax error, and when the file has
    no record at all.
    """
    source = "<stdin>" if path == "-" else path
    for line, raw in iter_raw(path):
        yield parse_record(raw, source=source, line=line)


def iter_raw(path: str, *, required: bool = True) -> Iterator[tuple[int, Any]]:
    """(line or Parquet row, decoded value) for each record of a JSON, JSON Lines or Parquet
    file (``-``: JSON or JSON Lines on stdin), streamed. ``required``: none is an error."""
    source = "<stdin>" if path == "-" else path
    empty = True
    if path != "-" and _is_parquet(path):
        from producer.formats import read_rows

        for position, raw in read_rows(path, "parquet"):
            empty = False
            yield position, raw
    else:
        try:
            stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror or exc}", source=source) from exc
        try:
            for line, raw in read_items(stream, source):
                empty = False
                yield line, raw
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror or exc}", source=source) from exc
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
    if empty and required:
        raise InputError("no records", source=source)


def _is_parquet(path: str) -> bool:
    from producer.formats import kind_of

    try:
        return kind_of(path) == "parquet"
    except OSError:
        return False  # the open that follows says why, naming the file


def load_results(path: str) -> list[JudgeRecord]:
    """Every record of a results file, in a list: for small files and tests."""
    return list(iter_records(path))


def _decode(data: bytes, source: str, line: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line += data.count(b"\n", 0, exc.start)
        raise InputError("not UTF-8 text", source=source, line=line) from exc


def read_items(stream: BinaryIO, source: str) -> Iterator[tuple[int, Any]]:
    """(line, value) for each record: JSON Lines, or the elements of a JSON array."""
    leading = b""  # blank lines before the first value
    first = True
    for number, data in enumerate(stream, start=1):
        if number == 1 and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        if not data.strip():
            leading += data if first else b""
            continue
        if first and data.lstrip().startswith(b"["):
            yield from _json_array(_chunks(leading + data, stream, source), source)
            return
        first = False
        yield number, _json_line(_decode(data, source, number), source, number)


def _chunks(head: bytes, stream: BinaryIO, source: str) -> Iterator[str]:
    """The rest of ``stream`` as text, in chunks (a multi-byte character may span reads)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    data = head
    while True:
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            line += data.count(b"\n", 0, exc.start)
            raise InputError("not UTF-8 text", source=source, line=line) from exc
        line += data.count(b"\n")
        if text:
            yield text
        if not data:
            return
        data = stream.read(CHUNK)


def _json_line(text: str, source: str, number: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON ({exc.msg}, column {exc.colno}); expected a JSON array "
            "or one JSON object per line",
            source=source,
            line=number,
        ) from exc


_WS = " \t\r\n"


class _Text:
    """A window on streamed text: the chunks from the current element on, and its line."""

    def __init__(self, chunks: Iterator[str]) -> None:
        self.chunks = chunks
        self.text = ""
        self.line = 1  # the line at text[counted]
        self.counted = 0
        self.more = True

    def line_at(self, pos: int) -> int:
        self.line += self.text.count("\n", self.counted, pos)
        self.counted = pos
        return self.line

    def fill(self, keep: int) -> int:
        """Append the next chunk, dropping the text before ``keep``; returns how far positions
        moved (-1 at the end of the stream)."""
        chunk = next(self.chunks, None) if self.more else None
        if chunk is None:
            self.more = False
            return -1
        self.line_at(keep)
        self.text = self.text[keep:] + chunk
        self.counted = 0
        return keep

    def skip(self, pos: int) -> int:
        """The position of the next non-blank character (the text's end if none is left)."""
        while True:
            text = self.text
            while pos < len(text) and text[pos] in _WS:
                pos += 1
            if pos < len(text):
                return pos
            moved = self.fill(pos)
            if moved < 0:
                return pos
            pos -= moved


def _json_array(chunks: Iterator[str], source: str) -> Iterator[tuple[int, Any]]:
    """The elements of a top-level JSON array, each with the line it starts on.

    Only the text from the current element on is held; an element cut by a chunk boundary is
    decoded again once the next chunk is in.
    """
    decoder = json.JSONDecoder()
    window = _Text(chunks)

    def fail(pos: int, message: str) -> InputError:
        return InputError(f"invalid JSON ({message})", source=source, line=window.line_at(pos))

    pos = window.skip(0) + 1  # past "["
    pos = window.skip(pos)
    if pos < len(window.text) and window.text[pos] == "]":
        pos = window.skip(pos + 1)
    else:
        while True:
            while True:
                try:
                    value, end = decoder.raw_decode(window.text, pos)
                except json.JSONDecodeError as exc:
                    moved = window.fill(pos)
                    if moved >= 0:
                        pos -= moved
                        continue
                    raise InputError(
                        f"invalid JSON ({exc.msg}, column {exc.colno})",
                        source=source,
                        line=window.line_at(pos) + window.text.count("\n", pos, exc.pos),
                    ) from exc
                if end == len(window.text):  # a number may go on in the next chunk
                    moved = window.fill(pos)
                    if moved >= 0:
                        pos -= moved
                        continue
                break
            yield window.line_at(pos), value
            pos = window.skip(end)
            text = window.text
            if pos < len(text) and text[pos] == ",":
                pos = window.skip(pos + 1)
                continue
            if pos < len(text) and text[pos] == "]":
                pos = window.skip(pos + 1)
                break
            raise fail(pos, "expected ',' or ']'" if pos < len(text) else "unterminated array")
    if pos < len(window.text):
        raise fail(pos, "extra data after the array")


# --------------------------------------------------------------------------- pairs


@dataclass
class PairResult:
    """Every judge's outcome for one pair occurrence (``occurrence`` counts from 1)."""

    instruction: str
    generation: str
    occurrence: int = 1
    scores: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # model -> error kind
    reasoning: dict[str, str | None] = field(default_factory=dict)  # model -> its reasoning
    fields: Mapping[str, Any] = field(default_factory=lambda: NO_FIELDS)  # from its first record
    records: int = 0

    @property
    def models(self) -> list[str]:
        return [*self.scores, *self.errors]


def iter_pairs(records: Iterable[JudgeRecord]) -> Iterator[PairResult]:
    """Group consecutive records into pairs: the order ``ibt score`` writes.

    A pair ends where the texts change or a model comes again (the same texts twice in a
    row are two pairs, as in the input). ``occurrence`` is not tracked here (that needs
    every text seen), so it stays 1.
    """
    pair: PairResult | None = None
    for record in records:
        if (
            pair is None
            or record.instruction != pair.instruction
            or record.generation != pair.generation
            or record.model in pair.scores
            or record.model in pair.errors
        ):
            if pair is not None:
                yield pair
            pair = PairResult(record.instruction, record.generation, fields=record.fields)
        pair.records += 1
        if record.score is None:
            pair.errors[record.model] = error_kind(record.error)
        else:
            pair.scores[record.model] = record.score
        pair.reasoning[record.model] = record.reasoning
    if pair is not None:
        yield pair
