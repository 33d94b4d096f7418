"""Repeated pairs in an input of any size, in bounded memory: an external sort of digests.

The validating pass hands each row's 16-byte digest (``Pair.digest``) to ``Repeats``. Every
``RUN_ROWS`` rows are sorted in memory (numpy) and written to a temporary file as (digest,
row) records; the sorted runs are then merged a block at a time, and a digest seen again
names its first row. Memory stays at one run however long the input (a few MB), and
disk takes 24 bytes per row while the pass runs. A 16-byte BLAKE2b digest makes a false
repeat a 2^-128 event: no text is compared, none is kept.
"""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RUN_ROWS = 65_536
# Records held by all runs' read blocks together while merging (a block per run).
MERGE_RECORDS = 65_536
_RECORD = [("digest", "V16"), ("row", "<i8")]


class Repeats:
    """Collects digests in row order; ``finish`` maps each repeated row to its first row."""

    def __init__(self) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="ibt-dedup-")
        self._runs: list[Path] = []
        self._buffer = bytearray()
        self.rows = 0
        self._run_start = 0

    def add(self, digest: bytes) -> None:
        self._buffer += digest
        self.rows += 1
        if self.rows - self._run_start == RUN_ROWS:
            self._flush()

    def _flush(self) -> None:
        import numpy as np

        count = self.rows - self._run_start
        if not count:
            return
        digests = np.frombuffer(self._buffer, dtype="V16")
        order = np.argsort(digests, kind="stable")
        records = np.empty(count, dtype=_RECORD)
        records["digest"] = digests[order]
        records["row"] = order + self._run_start
        del digests
        path = Path(self._scratch.name) / f"run-{len(self._runs):06d}"
        records.tofile(path)
        self._runs.append(path)
        self._buffer = bytearray()
        self._run_start = self.rows

    def finish(self) -> dict[int, int]:
        """Row → first row with the same digest, for every row that repeats an earlier one."""
        self._flush()
        duplicates: dict[int, int] = {}
        previous: bytes | None = None
        head = -1
        try:
            # Equal digests come out in row order (runs hold increasing rows, ties break on
            # the row), so the first of a group is its first row.
            block = max(64, MERGE_RECORDS // max(1, len(self._runs)))
            readers = (self._read(run, block) for run in self._runs)
            for digest, row in heapq.merge(*readers):
                if digest == previous:
                    duplicates[row] = head
                else:
                    previous, head = digest, row
        finally:
            self._scratch.cleanup()
        return duplicates

    @staticmethod
    def _read(path: Path, block: int) -> Iterator[tuple[bytes, int]]:
        import numpy as np

        size = np.dtype(_RECORD).itemsize
        with path.open("rb", buffering=0) as handle:  # a buffer per run would add up
            while data := handle.read(size * block):
                records: Any = np.frombuffer(data, dtype=_RECORD)
                yield from zip(
                    (bytes(d) for d in records["digest"]), records["row"].tolist(), strict=True
                )
