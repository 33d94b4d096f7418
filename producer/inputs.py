"""Load and validate the user's pairs; every problem is an InputError naming file, line, field.

Decisions: a UTF-8 byte-order mark is accepted and stripped (spreadsheet exports write one);
UTF-16/32 files are refused. Extra fields (``id``, ``source`` ...) are kept with the pair and
carried to its output records, after the documented keys; one that would shadow an output key
(``score``, ``model`` ...) is renamed ``input_<name>``. Empty strings are accepted here and
become per-item error records in the pipeline without a provider call.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from workers.errors import InputError
from workers.records import OUTPUT_KEYS

FIELDS = ("instruction", "generation")
# Keys an output record may have besides the extra fields it carries.
# (input_tokens/output_tokens: what ibt report reads as usage, if a record carries it.)
RESERVED = (*OUTPUT_KEYS, "error", "raw", "input_tokens", "output_tokens")
_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


@dataclass(frozen=True, slots=True)
class Pair:
    """One pair to judge; ``extra`` is the JSON object of the record's other fields, if any
    (kept as text: it is only ever written back out)."""

    instruction: str
    generation: str
    extra: str | None = None

    @property
    def texts(self) -> tuple[str, str]:
        """What a verdict depends on: two rows with the same texts are judged once."""
        return self.instruction, self.generation


def extra_fields(record: Mapping[str, object]) -> str | None:
    """The record's fields other than the pair's, renamed off the output keys, as JSON."""
    extra: dict[str, object] = {}
    for key, value in record.items():
        if key in FIELDS:
            continue
        name = str(key)
        while name in RESERVED or name in extra:
            name = f"input_{name}"
        extra[name] = value
    return json.dumps(extra, ensure_ascii=False) if extra else None


def json_type_name(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages users can act on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _pair(record: object, source: str, line: int) -> Pair:
    if not isinstance(record, Mapping):
        raise InputError(
            f"expected an object, got {json_type_name(record)}", source=source, line=line
        )
    values = []
    for name in FIELDS:
        if name not in record:
            raise InputError("missing field", source=source, line=line, field=name)
        value = record[name]
        if not isinstance(value, str):
            raise InputError(
                f"must be a string, got {json_type_name(value)}",
                source=source,
                line=line,
                field=name,
            )
        values.append(value)
    return Pair(values[0], values[1], extra_fields(record))


def validate_records(records: Iterable[object], *, source: str = "<python>") -> list[Pair]:
    """Pairs from in-memory records (the Python API); ``line`` is the 1-based record number."""
    pairs = [_pair(record, source, number) for number, record in enumerate(records, 1)]
    if not pairs:
        raise InputError("no pairs found", source=source)
    return pairs


def _strip_bom(data: bytes, source: str) -> bytes:
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            raise InputError(
                f"file is {name} encoded (byte-order mark); save it as UTF-8", source=source
            )
    return data.removeprefix(b"\xef\xbb\xbf")


def _decode(data: bytes, source: str) -> str:
    data = _strip_bom(data, source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"not valid UTF-8 (byte offset {exc.start})", source=source, line=line
        ) from None


def load_pairs(path: str, *, stdin: BinaryIO | None = None) -> list[Pair]:
    """Pairs from a .json / .jsonl / .ndjson / .csv file, or ``-`` for stdin (sniffed)."""
    source = "<stdin>" if path == "-" else path
    try:
        if path != "-" and Path(path).suffix.lower() in (".jsonl", ".ndjson"):
            with Path(path).open("rb") as handle:
                pairs = _from_json_lines(_decoded_lines(handle, source), source)
            if not pairs:
                raise InputError("no pairs found", source=source)
            return pairs
        data = (stdin or sys.stdin.buffer).read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", source=source) from None
    text = _decode(data, source)
    del data  # the text alone is what the parsers need; a large input is held once
    if not text.strip():
        raise InputError("no pairs found (the file is empty)", source=source)
    suffix = "" if path == "-" else Path(path).suffix.lower()
    if suffix not in (".json", ".jsonl", ".ndjson", ".csv"):
        first = text.lstrip()[:1]
        suffix = ".json" if first == "[" else ".jsonl" if first == "{" else ".csv"
    if suffix == ".json":
        pairs = _from_json_array(text, source)
    elif suffix == ".csv":
        pairs = _from_csv(text, source)
    else:
        pairs = _from_json_lines(_text_lines(text), source)
    if not pairs:
        raise InputError("no pairs found", source=source)
    return pairs


def _decoded_lines(handle: BinaryIO, source: str) -> Iterator[tuple[int, str]]:
    """A JSON Lines file a line at a time, so it is never held whole (and one non-ASCII
    character cannot widen a whole file's text to 2-4 bytes a character)."""
    offset = 0
    for number, raw in enumerate(handle, 1):
        data = _strip_bom(raw, source) if number == 1 else raw
        try:
            yield number, data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"not valid UTF-8 (byte offset {offset + len(raw) - len(data) + exc.start})",
                source=source,
                line=number,
            ) from None
        offset += len(raw)


def _text_lines(text: str) -> Iterator[tuple[int, str]]:
    """Numbered lines split at "\n" only: JSON strings may hold U+2028 and friends raw,
    which ``str.splitlines`` would split at."""
    yield from enumerate(text.split("\n"), 1)


def _from_json_lines(lines: Iterable[tuple[int, str]], source: str) -> list[Pair]:
    pairs = []
    for number, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            column = getattr(exc, "colno", None)
            where = f" (column {column})" if column else ""
            raise InputError(f"invalid JSON{where}: {exc}", source=source, line=number) from None
        pairs.append(_pair(record, source, number))
    return pairs


def _from_json_array(text: str, source: str) -> list[Pair]:
    decoder = json.JSONDecoder()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON (column {exc.colno}): {exc.msg}", source=source, line=exc.lineno
        ) from None
    except ValueError as exc:
        raise InputError(f"invalid JSON: {exc}", source=source) from None
    if not isinstance(data, list):
        raise InputError(
            f"expected a JSON array, got {json_type_name(data)}", source=source, line=1
        )
    # Walk the array once more with raw_decode to learn where each element starts, so an error
    # can name its line; only done when an element is bad, so the happy path stays one parse.
    pairs: list[Pair] = []
    for index, record in enumerate(data):
        try:
            pairs.append(_pair(record, source, index + 1))
        except InputError as exc:
            line = _element_line(text, decoder, index)
            raise InputError(exc.message, source=source, line=line, field=exc.field) from None
    return pairs


def _element_line(text: str, decoder: json.JSONDecoder, wanted: int) -> int | None:
    position = text.index("[") + 1
    for index in range(wanted + 1):
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if index == wanted:
            return text.count("\n", 0, position) + 1
        try:
            _, position = decoder.raw_decode(text, position)
        except ValueError:
            return None
    return None


def _from_csv(text: str, source: str) -> list[Pair]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise InputError("no header row", source=source, line=1) from None
    columns = [name.strip() for name in header]
    missing = [name for name in FIELDS if name not in columns]
    if missing:
        raise InputError(
            f"CSV header must name instruction and generation; found {columns}",
            source=source,
            line=1,
            field=missing[0],
        )
    positions = [columns.index(name) for name in FIELDS]
    others = [(i, name) for i, name in enumerate(columns) if name not in FIELDS and name]
    pairs = []
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputError(f"malformed CSV: {exc}", source=source, line=start) from None
        if row and any(cell.strip() for cell in row):
            if len(row) != len(columns):
                raise InputError(
                    f"expected {len(columns)} columns, got {len(row)}", source=source, line=start
                )
            extra = extra_fields({name: row[i] for i, name in others}) if others else None
            pairs.append(Pair(row[positions[0]], row[positions[1]], extra))
        start = reader.line_num + 1
    return pairs
