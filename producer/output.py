"""Writes the documented list: JSON (``.json``), JSON Lines (``.jsonl``) or stdout."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO


def write_results(results: Iterable[dict[str, Any]], path: str | None) -> None:
    """Write ``results`` to ``path`` by its extension; ``None`` or ``-`` means stdout.

    The file is written to a temporary name and renamed, so a crash never leaves a
    truncated output that looks complete.
    """
    if path in (None, "-"):
        write_json_array(results, sys.stdout)
        sys.stdout.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = target.suffix.lower() in (".jsonl", ".ndjson")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if lines:
                for record in results:
                    handle.write(json.dumps(record, ensure_ascii=False))
                    handle.write("\n")
            else:
                write_json_array(results, handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
