"""Results files as ``ibt score`` writes them: reading, validating, one record at a time.

A results file is a JSON array or JSON Lines (detected from the content, so the extension
does not matter; ``-`` reads stdin). Records are validated as they are read; a bad one raises
:class:`InputError` naming the file, the line and the field.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
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
    {"reasoning", "score", "model", "error", "raw", "input_tokens", "output_tokens"}
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
        fields=fields or NO_FIELDS,  # most files have none: share one empty mapping
    )


_TOKEN_KEYS = ("input_tokens", "output_tokens")


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


def load_results(path: str) -> list[JudgeRecord]:
    """Every record of a results file (JSON array or JSON Lines; ``-`` for stdin).

    JSON Lines are read one line at a time; an array is read whole first, so a syntax error
    anywhere in it is reported before any record error (as ``json.load`` would).
    """
    source = "<stdin>" if path == "-" else path
    try:
        stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=source) from exc
    # The same texts come back once per judge: keep one copy of each.
    texts: dict[str, str] = {}
    records = []
    try:
        for line, raw in _read_items(stream, source):
            if isinstance(raw, dict):
                for key in ("instruction", "generation"):
                    value = raw.get(key)
                    if isinstance(value, str):
                        raw[key] = texts.setdefault(value, value)
            records.append(parse_record(raw, source=source, line=line))
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=source) from exc
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if not records:
        raise InputError("no records", source=source)
    return records


def _decode(data: bytes, source: str, line: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line += data.count(b"\n", 0, exc.start)
        raise InputError("not UTF-8 text", source=source, line=line) from exc


def _read_items(stream: BinaryIO, source: str) -> Iterator[tuple[int, Any]]:
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
            text = _decode(leading + data + stream.read(), source, 1)
            yield from list(_json_array(text, source))  # syntax errors first
            return
        first = False
        yield number, _json_line(_decode(data, source, number), source, number)


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


def _json_array(text: str, source: str) -> Iterator[tuple[int, Any]]:
    """The elements of a top-level JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    line, counted = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in _WS:
            pos += 1
        return pos

    def fail(pos: int, message: str) -> InputError:
        return InputError(f"invalid JSON ({message})", source=source, line=line_at(pos))

    pos = skip(0) + 1  # past "["
    pos = skip(pos)
    if pos < len(text) and text[pos] == "]":
        pos = skip(pos + 1)
    else:
        while True:
            start = pos
            try:
                value, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"invalid JSON ({exc.msg}, column {exc.colno})", source=source, line=exc.lineno
                ) from exc
            yield line_at(start), value
            pos = skip(pos)
            if pos < len(text) and text[pos] == ",":
                pos = skip(pos + 1)
                continue
            if pos < len(text) and text[pos] == "]":
                pos = skip(pos + 1)
                break
            raise fail(pos, "expected ',' or ']'" if pos < len(text) else "unterminated array")
    if pos < len(text):
        raise fail(pos, "extra data after the array")
