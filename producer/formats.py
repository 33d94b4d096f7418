"""Rows in and out: JSON, JSON Lines, CSV and Parquet, read and written a batch at a time.

Readers yield ``(position, record)`` where the position is what an error names: the line of
a JSON Lines or CSV file, the element's line of a JSON array, the row number of a Parquet
file. None of them holds a whole file, except a JSON array (the standard library has no
incremental parser; use JSON Lines or Parquet for large inputs, as the README says).

Parquet goes through ``pyarrow``: read in record batches, written in row groups.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from workers.errors import InputError

JSON_SUFFIXES = (".json",)
LINES_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
CSV_SUFFIXES = (".csv",)
READABLE = JSON_SUFFIXES + LINES_SUFFIXES + PARQUET_SUFFIXES + CSV_SUFFIXES
# Rows per Parquet record batch read, and per row group written.
PARQUET_BATCH = 10_000
_PARQUET_MAGIC = b"PAR1"
_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}

Row = tuple[int, Any]
DOCUMENTED = ("reasoning", "score", "instruction", "generation", "model")


def kind_of(path: str) -> str:
    """The format of ``path``: by extension, else sniffed from its first bytes."""
    suffix = Path(path).suffix.lower()
    for kind, suffixes in (
        ("json", JSON_SUFFIXES),
        ("jsonl", LINES_SUFFIXES),
        ("parquet", PARQUET_SUFFIXES),
        ("csv", CSV_SUFFIXES),
    ):
        if suffix in suffixes:
            return kind
    with Path(path).open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    first = head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]
    return "json" if first == b"[" else "jsonl" if first == b"{" else "csv"


def read_rows(path: str, kind: str | None = None) -> Iterator[Row]:
    """Every record of ``path`` with its position; ``InputError`` names file and line."""
    kind = kind or kind_of(path)
    try:
        if kind == "parquet":
            yield from _parquet_rows(path)
            return
        with Path(path).open("rb") as handle:
            if kind == "jsonl":
                yield from _json_lines(handle, path)
            elif kind == "csv":
                yield from _csv_rows(handle, path)
            else:
                yield from _json_array(handle.read(), path)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", source=path) from None


def strip_bom(data: bytes, source: str) -> bytes:
    """UTF-8's byte-order mark is dropped (spreadsheets write one); UTF-16/32 is refused."""
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            raise InputError(
                f"file is {name} encoded (byte-order mark); save it as UTF-8", source=source
            )
    return data.removeprefix(b"\xef\xbb\xbf")


def decode(data: bytes, source: str, *, line: int = 1, offset: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = line + data.count(b"\n", 0, exc.start)
        raise InputError(
            f"not valid UTF-8 (byte offset {offset + exc.start})", source=source, line=where
        ) from None


def _json_lines(handle: BinaryIO, source: str) -> Iterator[Row]:
    """A line at a time, split at "\\n" only (a JSON string may hold U+2028 raw)."""
    offset = 0
    for number, raw in enumerate(handle, 1):
        data = strip_bom(raw, source) if number == 1 else raw
        text = decode(data, source, line=number, offset=offset + len(raw) - len(data))
        offset += len(raw)
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except ValueError as exc:
            column = getattr(exc, "colno", None)
            where = f" (column {column})" if column else ""
            raise InputError(f"invalid JSON{where}: {exc}", source=source, line=number) from None


def _json_array(data: bytes, source: str) -> Iterator[Row]:
    text = decode(strip_bom(data, source), source)
    del data
    if not text.strip():
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON (column {exc.colno}): {exc.msg}", source=source, line=exc.lineno
        ) from None
    except ValueError as exc:
        raise InputError(f"invalid JSON: {exc}", source=source) from None
    if not isinstance(items, list):
        raise InputError(
            f"expected a JSON array, got {json_type_name(items)}", source=source, line=1
        )
    # A position is the element's number; its line is found only if the element is bad
    # (see element_line), so the happy path stays one parse.
    yield from enumerate(items, 1)


def element_line(path: str, wanted: int) -> int | None:
    """The line where element ``wanted`` (1-based) of the JSON array in ``path`` starts."""
    text = Path(path).read_bytes().removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    for index in range(1, wanted + 1):
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if index == wanted:
            return text.count("\n", 0, position) + 1
        try:
            _, position = decoder.raw_decode(text, position)
        except ValueError:
            return None
    return None


def _csv_rows(handle: BinaryIO, source: str) -> Iterator[Row]:
    """Rows as dicts by header name; a row's position is the line it starts on."""
    lines = _decoded_text_lines(handle, source)
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise InputError("no header row", source=source, line=1) from None
    columns = [name.strip() for name in header]
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
            yield start, {name: row[i] for i, name in enumerate(columns) if name}
        start = reader.line_num + 1


def csv_header(path: str) -> list[str]:
    with Path(path).open("rb") as handle:
        reader = csv.reader(_decoded_text_lines(handle, path))
        try:
            return [name.strip() for name in next(reader)]
        except (StopIteration, csv.Error):
            raise InputError("no header row", source=path, line=1) from None


def _decoded_text_lines(handle: BinaryIO, source: str) -> Iterator[str]:
    offset = 0
    for number, raw in enumerate(handle, 1):
        data = strip_bom(raw, source) if number == 1 else raw
        yield decode(data, source, line=number, offset=offset + len(raw) - len(data))
        offset += len(raw)


def _parquet_rows(path: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid etc. for a broken file
        raise InputError(f"not a readable Parquet file: {exc}", source=path) from None
    number = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH):
        for record in batch.to_pylist():
            number += 1
            yield number, record


def parquet_columns(path: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except Exception as exc:
        raise InputError(f"not a readable Parquet file: {exc}", source=path) from None


def spool_stdin(directory: Path, stdin: BinaryIO | None = None) -> Path:
    """Copy standard input to a file, so it can be read twice (validate, then feed)."""
    target = directory / "stdin.input"
    source = stdin or sys.stdin.buffer
    with target.open("wb") as handle:
        while chunk := source.read(1 << 20):
            handle.write(chunk)
    return target


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


def _table(records: list[dict[str, Any]]) -> Any:
    """An Arrow table of ``records``, every key a column (in order of first appearance):
    an error record's ``error`` and ``raw`` appear in whichever rows have them."""
    import pyarrow as pa

    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    columns = {name: [record.get(name) for record in records] for name in names}
    try:
        return pa.table(columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # An extra field with mixed types across rows: keep each value as its JSON text.
        fixed = {}
        for name, values in columns.items():
            try:
                fixed[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                fixed[name] = pa.array(
                    [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
                )
        return pa.table(fixed)


def write_parquet_part(records: list[dict[str, Any]], path: Path) -> None:
    """One small Parquet file of ``records``, written whole then renamed into place."""
    import pyarrow.parquet as pq

    partial = path.with_name(path.name + ".tmp")
    pq.write_table(_table(records), partial)
    os.replace(partial, path)


def join_parquet_parts(parts: list[Path], target: Path) -> None:
    """The parts, in order, as one Parquet file with row groups of about PARQUET_BATCH rows;
    columns missing from a part are null there, types widened where parts differ."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(part) for part in parts]
    textual: set[str] = set()  # columns whose parts disagree on a type: kept as JSON text
    if not schemas:
        schema = pa.schema([(name, pa.string()) for name in DOCUMENTED])
    else:
        try:
            schema = pa.unify_schemas(schemas, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            types: dict[str, set[Any]] = {}
            for part_schema in schemas:
                for f in part_schema:
                    if not pa.types.is_null(f.type):
                        types.setdefault(f.name, set()).add(f.type)
            textual = {name for name, found in types.items() if len(found) > 1}
            schemas = [
                pa.schema([pa.field(f.name, pa.string()) if f.name in textual else f for f in ps])
                for ps in schemas
            ]
            schema = pa.unify_schemas(schemas, promote_options="permissive")
        # All-null columns (every reasoning an error, say) are strings in the output.
        schema = pa.schema(
            [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema]
        )
    partial = target.with_name(f".{target.name}.tmp")
    pending: list[Any] = []
    rows = 0
    with pq.ParquetWriter(partial, schema) as writer:
        for part in parts:
            table = pq.read_table(part)
            for name in textual & set(table.column_names):
                values = [
                    None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)
                    for v in table.column(name).to_pylist()
                ]
                column = table.column_names.index(name)
                table = table.set_column(column, name, pa.array(values, pa.string()))
            for field in schema:
                if field.name not in table.column_names:
                    table = table.append_column(field, pa.nulls(table.num_rows, field.type))
            pending.append(table.select(schema.names).cast(schema))
            rows += table.num_rows
            if rows >= PARQUET_BATCH:
                writer.write_table(pa.concat_tables(pending), row_group_size=PARQUET_BATCH)
                pending, rows = [], 0
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=PARQUET_BATCH)
        if not parts:
            writer.write_table(schema.empty_table())
    os.replace(partial, target)


def write_parquet(records: Iterator[dict[str, Any]], target: Path) -> int:
    """A whole Parquet file from a stream of records, a row group at a time."""
    import tempfile

    count = 0
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".parts-") as scratch:
        parts: list[Path] = []
        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append(record)
            count += 1
            if len(batch) >= PARQUET_BATCH:
                parts.append(Path(scratch) / f"part-{len(parts):06d}.parquet")
                write_parquet_part(batch, parts[-1])
                batch = []
        if batch:
            parts.append(Path(scratch) / f"part-{len(parts):06d}.parquet")
            write_parquet_part(batch, parts[-1])
        join_parquet_parts(parts, target)
    return count
