"""``ibt reparse``: read the unparseable replies of a results file again, with today's parser.

An ``unparseable reply`` error record keeps ``raw``, the reply as received, so a parser that
has learnt a new form can recover it locally: no provider is called and nothing is paid.
Every other record passes through unchanged and in order; the file is streamed, one record
at a time, so its size does not matter.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from producer.curation.results import iter_raw, parse_record
from producer.output import check_output, write_results
from workers.parsing import Verdict, parse_reply, parse_structured

UNPARSEABLE = "unparseable reply"


@dataclass
class Tally:
    unparseable: int = 0
    recovered: int = 0


def reparse(record: dict[str, Any]) -> dict[str, Any] | None:
    """``record`` with the verdict its raw reply now gives, or None if it still gives none.

    A structured reply's raw text is the JSON object the provider returned; it is read as a
    structured reply first, then as free text, since the record does not say which it was.
    """
    raw = record.get("raw")
    if not isinstance(raw, str):
        return None
    verdict = parse_reply(raw)
    if not isinstance(verdict, Verdict) and raw.lstrip().startswith("{"):
        verdict = parse_structured(raw)
    if not isinstance(verdict, Verdict):
        return None
    fixed = {key: value for key, value in record.items() if key not in ("error", "raw")}
    fixed["reasoning"] = verdict.reasoning
    fixed["score"] = str(verdict.score)
    return fixed


def reparsed(path: str, tally: Tally) -> Iterator[dict[str, Any]]:
    """The records of ``path``, each validated as ``ibt report`` validates it, with every
    recoverable unparseable one replaced by its verdict."""
    source = "<stdin>" if path == "-" else path
    for line, raw in iter_raw(path):
        parse_record(raw, source=source, line=line)
        error = raw.get("error")
        if raw.get("score") is None and isinstance(error, str) and error.startswith(UNPARSEABLE):
            tally.unparseable += 1
            fixed = reparse(raw)
            if fixed is not None:
                tally.recovered += 1
                raw = fixed
        yield raw


def run_reparse(results: str, output: str | None) -> int:
    """Write ``results`` with its recoverable unparseable records fixed to ``output``."""
    check_output(output, inputs=[results], flag="-o")
    tally = Tally()
    write_results(reparsed(results, tally), output)
    still = tally.unparseable - tally.recovered
    print(
        f"reparse: {tally.recovered} of {tally.unparseable} unparseable records recovered; "
        f"{still} still unparseable",
        file=sys.stderr,
    )
    return 0
