"""A job's input as the feeder reads it: counted and deduplicated once, then read again.

See workers/feeding.py for the window itself. ``JobInput`` is what the producer knows of
the input after the validating pass (``producer.inputs.scan``): how many rows, which repeat
an earlier pair, and how to read the pairs again in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import redis

from producer.inputs import InputSource, Pair, iter_pairs, scan
from workers import jobstate
from workers.feeding import FeedRow
from workers.models import ModelSpec


def default_window(specs: Sequence[ModelSpec]) -> int:
    """Tasks per model in flight: 20 per worker thread of the busiest model, at least 2,000
    (a few seconds of work for one 64-thread worker on a fast provider)."""
    return max(2000, 20 * max((spec.concurrency or 1) for spec in specs))


@dataclass
class JobInput:
    """The pairs of a job: counted and deduplicated once, then readable again in order."""

    rows: int
    unique: int
    duplicates: dict[int, int]
    with_extra: bool
    reopen: Callable[[], Iterator[Pair]] = field(repr=False)

    @classmethod
    def from_source(cls, source: InputSource) -> JobInput:
        found = scan(source)
        return cls(
            found.rows, found.unique, found.duplicates, found.with_extra, lambda: iter_pairs(source)
        )

    @classmethod
    def from_pairs(cls, pairs: Sequence[Pair]) -> JobInput:
        first: dict[tuple[str, str], int] = {}
        duplicates: dict[int, int] = {}
        for row, pair in enumerate(pairs):
            head = first.setdefault(pair.texts, row)
            if head != row:
                duplicates[row] = head
        with_extra = any(pair.extra for pair in pairs)
        return cls(len(pairs), len(first), duplicates, with_extra, lambda: iter(pairs))

    def feed_rows(self, start: int) -> Iterator[FeedRow]:
        """Rows from ``start`` on as the feeder takes them (texts only for first rows)."""
        for row, pair in enumerate(islice(self.reopen(), start, None), start):
            texts = None if row in self.duplicates else pair.texts
            yield row, texts, pair.extra


def store_duplicates(client: redis.Redis, job: str, data: JobInput, expires: int) -> None:
    """Row → first row, for the rows that repeat an earlier pair (O(duplicates), not rows)."""
    if not data.duplicates:
        return
    items = list(data.duplicates.items())
    with client.pipeline(transaction=False) as pipe:
        for start in range(0, len(items), 5000):
            chunk = {str(row): head for row, head in items[start : start + 5000]}
            pipe.hset(jobstate.dups_key(job), mapping=chunk)  # type: ignore[arg-type]
        pipe.expire(jobstate.dups_key(job), expires)
        pipe.execute()
