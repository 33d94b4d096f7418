"""Writes the documented list: JSON (``.json``), JSON Lines (``.jsonl``) or stdout."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_results(results: Iterable[dict[str, Any]], path: str | None) -> None:
    """Write ``results`` to ``path`` by its extension; ``None`` or ``-`` means stdout.

    The file is written to a temporary name and renamed, so a crash never leaves a
    truncated output that looks complete.
    """
    if path in (None, "-"):
        json.dump(list(results), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
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
                json.dump(list(results), handle, ensure_ascii=False, indent=2)
                handle.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
