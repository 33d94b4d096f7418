"""Writes the documented list: JSON (``.json``), JSON Lines (``.jsonl``), Parquet or stdout.

The destination is checked before a job starts (``check_output``), so a wrong extension or
an output that would overwrite the input costs nothing.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from workers.errors import InputError

JSON_SUFFIXES = (".json",)
LINES_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
WRITABLE = JSON_SUFFIXES + LINES_SUFFIXES + PARQUET_SUFFIXES


def is_stdout(path: str | None) -> bool:
    return path in (None, "-")


def check_output(
    path: str | None, *, inputs: Sequence[str] = (), force: bool = False, flag: str = "-o"
) -> None:
    """Refuse, before anything is paid for, an output we cannot write or should not.

    An unknown extension is refused rather than guessed (``.parquet`` would get JSON in a
    Parquet name); an output that is one of the inputs is refused unless ``force``.
    """
    if is_stdout(path):
        return
    assert path is not None
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in WRITABLE:
        raise InputError(
            f"unknown output extension '{suffix or '(none)'}'; use .json (a JSON array), "
            ".jsonl (JSON Lines), .parquet, or - for stdout",
            source=path,
            field=flag,
        )
    if target.is_dir():
        raise InputError("is a directory", source=path, field=flag)
    for source in inputs:
        if source == "-" or not target.exists():
            continue
        try:
            same = target.samefile(source)
        except OSError:
            continue
        if same and not force:
            raise InputError(
                f"would overwrite the input {source}; choose another output or pass --force",
                source=path,
                field=flag,
            )
    parent = target.parent if str(target.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not os.access(existing, os.W_OK):
        raise InputError(f"cannot write to {existing}", source=path, field=flag)


def _default_mode(target: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the old file's, else 0666 & ~umask."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_results(results: Iterable[dict[str, Any]], path: str | None) -> int:
    """Write ``results`` to ``path`` by its extension; ``None`` or ``-`` means stdout.

    The file is written to a temporary name and renamed, so a crash never leaves a
    truncated output that looks complete. Returns the number of records written.
    """
    if is_stdout(path):
        count = write_json_array(results, sys.stdout)
        sys.stdout.flush()
        return count
    assert path is not None
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix.lower() in PARQUET_SUFFIXES:
        from producer.formats import write_parquet

        return write_parquet(iter(results), target)
    lines = target.suffix.lower() in LINES_SUFFIXES
    mode = _default_mode(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if lines:
                count = write_json_lines(results, handle)
            else:
                count = write_json_array(results, handle)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def write_json_lines(results: Iterable[dict[str, Any]], handle: TextIO) -> int:
    count = 0
    for count, record in enumerate(results, 1):  # noqa: B007 - the count is returned
        handle.write(json.dumps(record, ensure_ascii=False))
        handle.write("\n")
    return count


def write_json_array(results: Iterable[dict[str, Any]], handle: TextIO) -> int:
    """Write ``results`` as an indented JSON array one record at a time (the list is never
    held whole); the text is what ``json.dump(list(results), indent=2)`` writes."""
    count = 0
    for record in results:
        handle.write(",\n" if count else "[\n")
        # Only structural line breaks are raw "\n" (json escapes those inside strings);
        # textwrap.indent would also split at U+2028 and friends inside a text.
        handle.write("  " + json.dumps(record, ensure_ascii=False, indent=2).replace("\n", "\n  "))
        count += 1
    handle.write("\n]\n" if count else "[]\n")
    return count


SUMMARY_SUFFIX = ".summary.json"


def summary_path(results: str) -> Path:
    """Where the run summary of a results file lives: beside it, named after it."""
    return Path(results + SUMMARY_SUFFIX)


def write_run_summary(results: str | None, job: str, summary: dict[str, Any], records: int) -> None:
    """Write what the run that made ``results`` used and paid, beside it, for ``ibt report``.

    The documented list keeps its five keys; usage and cost (batch items at batch prices,
    repeated calls included) live in this small file instead. Nothing for stdout.
    """
    if is_stdout(results):
        return
    assert results is not None
    document = {"job": job, "records": records, **summary}
    target = summary_path(results)
    target.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
