"""Load and validate the user's pairs; every problem is an InputError naming file, line, field.

Decisions: a UTF-8 byte-order mark is accepted and stripped (spreadsheet exports write one);
UTF-16/32 files are refused. Extra fields (``id``, ``source`` ...) are kept with the pair and
carried to its output records, after the documented keys; one that would shadow an output key
(``score``, ``model`` ...) is renamed ``input_<name>``. Empty strings are accepted here and
become per-item error records in the pipeline without a provider call.

A large input is never held: ``scan`` validates it in one streaming pass that keeps a
16-byte digest per pair (to find duplicates) and no text, and ``iter_pairs`` reads it again
while the job is fed. ``--map`` names the columns that hold the pair (``ColumnMap``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from producer import formats
from producer.formats import json_type_name
from workers.errors import InputError
from workers.records import OUTPUT_KEYS

FIELDS = ("instruction", "generation")
# Keys an output record may have besides the extra fields it carries.
# (input_tokens/output_tokens: what ibt report reads as usage, if a record carries it.)
RESERVED = (*OUTPUT_KEYS, "error", "raw", "samples", "input_tokens", "output_tokens")
# Columns joined into one text (``--map instruction=instruction,input``) are separated so.
JOIN = "\n\n"

__all__ = ["Pair", "ColumnMap", "InputSource", "Scan", "json_type_name", "load_pairs"]


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

    def digest(self) -> bytes:
        """16 bytes that stand for the texts when finding duplicates in a large input."""
        hasher = hashlib.blake2b(digest_size=16)
        for text in self.texts:
            data = text.encode("utf-8", "surrogatepass")
            hasher.update(len(data).to_bytes(8, "little"))
            hasher.update(data)
        return hasher.digest()


@dataclass(frozen=True)
class ColumnMap:
    """Which input columns hold the pair: ``instruction`` and ``generation`` by default.

    A field may name several columns (``instruction=instruction,input``, Alpaca's layout):
    their texts are joined with a blank line; the first is required, the others may be
    missing, null or empty. Mapped columns are the pair, so they are not carried as extras.
    """

    instruction: tuple[str, ...] = ("instruction",)
    generation: tuple[str, ...] = ("generation",)

    @classmethod
    def parse(cls, items: Sequence[str] | None) -> ColumnMap:
        """From ``--map FIELD=COLUMN[,COLUMN...]`` options."""
        columns = {"instruction": cls.instruction, "generation": cls.generation}
        for item in items or ():
            name, sep, value = item.partition("=")
            names = tuple(part.strip() for part in value.split(",") if part.strip())
            if not sep or name.strip() not in FIELDS or not names:
                raise InputError(
                    f"expected instruction=COLUMN or generation=COLUMN[,COLUMN...], got {item!r}",
                    source="--map",
                )
            columns[name.strip()] = names
        return cls(columns["instruction"], columns["generation"])

    @property
    def default(self) -> bool:
        return self == ColumnMap()

    def columns(self, name: str) -> tuple[str, ...]:
        return self.instruction if name == "instruction" else self.generation

    @property
    def used(self) -> set[str]:
        return {*self.instruction, *self.generation}


@dataclass(frozen=True)
class InputSource:
    """A file of pairs that can be read more than once (stdin is spooled to a file first)."""

    path: str
    source: str  # the name errors give: the path, or <stdin>
    mapping: ColumnMap = field(default_factory=ColumnMap)
    kind: str = ""

    @classmethod
    def open(
        cls, path: str, mapping: ColumnMap | None = None, *, spool_dir: Path | None = None
    ) -> InputSource:
        mapping = mapping or ColumnMap()
        if path == "-":
            import atexit
            import shutil
            import tempfile

            directory = spool_dir or Path(tempfile.mkdtemp(prefix="ibt-stdin-"))
            if spool_dir is None:  # read twice while the command runs, removed when it ends
                atexit.register(shutil.rmtree, directory, ignore_errors=True)
            spooled = str(formats.spool_stdin(directory))
            return cls(spooled, "<stdin>", mapping, _kind(spooled, "<stdin>"))
        return cls(path, path, mapping, _kind(path, path))

    def rows(self) -> Iterator[tuple[int, object]]:
        try:
            yield from formats.read_rows(self.path, self.kind)
        except InputError as exc:
            raise _renamed(exc, self.source) from None

    def check_columns(self) -> None:
        """A Parquet or CSV input names its columns up front: check the mapping against them."""
        if self.kind not in ("parquet", "csv"):
            return
        found = (
            formats.parquet_columns(self.path)
            if self.kind == "parquet"
            else formats.csv_header(self.path)
        )
        for name in FIELDS:
            first = self.mapping.columns(name)[0]
            if first not in found:
                what = "Parquet columns" if self.kind == "parquet" else "CSV header"
                hint = "" if self.mapping.default else " (see --map)"
                raise InputError(
                    f"no column {first!r} for {name}; the {what}: {found}{hint}",
                    source=self.source,
                    line=1 if self.kind == "csv" else None,
                    field=first,
                )


def _kind(path: str, source: str) -> str:
    try:
        return formats.kind_of(path)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", source=source) from None


def _renamed(exc: InputError, source: str) -> InputError:
    if exc.source == source:
        return exc
    return InputError(exc.message, source=source, line=exc.line, field=exc.field)


def extra_fields(record: Mapping[str, object], skip: Iterable[str] = FIELDS) -> str | None:
    """The record's fields other than the pair's, renamed off the output keys, as JSON."""
    skipped = set(skip)
    extra: dict[str, object] = {}
    for key, value in record.items():
        if key in skipped:
            continue
        name = str(key)
        while name in RESERVED or name in extra:
            name = f"input_{name}"
        extra[name] = value
    return json.dumps(extra, ensure_ascii=False, default=str) if extra else None


def to_pair(record: object, source: str, line: int, mapping: ColumnMap | None = None) -> Pair:
    """The pair in one input record, or InputError naming the record's place and field."""
    if not isinstance(record, Mapping):
        raise InputError(
            f"expected an object, got {json_type_name(record)}", source=source, line=line
        )
    mapping = mapping or ColumnMap()
    values = []
    for name in FIELDS:
        columns = mapping.columns(name)
        texts = []
        for position, column in enumerate(columns):
            if column not in record or record[column] is None and position > 0:
                if position == 0:
                    raise InputError("missing field", source=source, line=line, field=column)
                continue
            value = record[column]
            if not isinstance(value, str):
                raise InputError(
                    f"must be a string, got {json_type_name(value)}",
                    source=source,
                    line=line,
                    field=column,
                )
            if position == 0 or value.strip():
                texts.append(value)
        values.append(JOIN.join(texts))
    skip = mapping.used if not mapping.default else FIELDS
    return Pair(values[0], values[1], extra_fields(record, skip))


def validate_records(records: Iterable[object], *, source: str = "<python>") -> list[Pair]:
    """Pairs from in-memory records (the Python API); ``line`` is the 1-based record number."""
    pairs = [to_pair(record, source, number) for number, record in enumerate(records, 1)]
    if not pairs:
        raise InputError("no pairs found", source=source)
    return pairs


def iter_pairs(source: InputSource) -> Iterator[Pair]:
    """The pairs of ``source`` in order, validated, one at a time."""
    for position, record in source.rows():
        try:
            yield to_pair(record, source.source, position, source.mapping)
        except InputError as exc:
            if source.kind == "json":  # a position is the element's number: name its line
                line = formats.element_line(source.path, position)
                raise InputError(
                    exc.message, source=source.source, line=line, field=exc.field
                ) from None
            raise


def load_pairs(
    path: str, *, stdin: BinaryIO | None = None, mapping: ColumnMap | None = None
) -> list[Pair]:
    """Every pair of a file in memory (small inputs, the demo, the Python API)."""
    if path == "-":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="ibt-stdin-") as spool:
            spooled = str(formats.spool_stdin(Path(spool), stdin))
            source = InputSource(spooled, "<stdin>", mapping or ColumnMap(), "")
            source = InputSource(spooled, "<stdin>", source.mapping, _kind(spooled, "<stdin>"))
            return _all(source)
    source = InputSource.open(path, mapping)
    return _all(source)


def _all(source: InputSource) -> list[Pair]:
    source.check_columns()
    pairs = list(iter_pairs(source))
    if not pairs:
        raise InputError("no pairs found", source=source.source)
    return pairs


@dataclass
class Scan:
    """What the validating pass learnt, without keeping a text: how many rows, how many
    distinct pairs, and which rows repeat an earlier pair (row → that pair's first row)."""

    rows: int
    unique: int
    duplicates: dict[int, int]
    with_extra: bool


def scan(source: InputSource) -> Scan:
    """Validate every row of ``source`` in one streaming pass (see ``Scan``); texts are
    dropped as read, and repeats are found in bounded memory (producer/dedup.py)."""
    from producer.dedup import Repeats

    source.check_columns()
    repeats = Repeats()
    with_extra = False
    for pair in iter_pairs(source):
        repeats.add(pair.digest())
        with_extra = with_extra or pair.extra is not None
    if not repeats.rows:
        repeats.finish()
        raise InputError("no pairs found", source=source.source)
    duplicates = repeats.finish()
    return Scan(repeats.rows, repeats.rows - len(duplicates), duplicates, with_extra)
