"""A ``--no-wait`` job's input, left in Redis for the cluster to feed itself from.

The producer of ``ibt score --no-wait`` returns at once, so the rows it has not fed must live
where every worker can read them: in Redis, ``CHUNK_ROWS`` rows to a zlib-compressed JSON
value, each deleted in the transaction that moves the feed cursor past it. The trade-off
(README, "Large jobs"): Redis holds the compressed input that is not fed yet (about a third
of the texts' size) instead of nothing; the other choice, a path every worker can read,
would need a shared filesystem that a cluster of hosts does not always have.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import redis

from workers.errors import IbtError
from workers.feeding import FeedRow, OnCommit

CHUNK_ROWS = 1000


def chunk_key(job: str, number: int) -> str:
    return f"ibt:job:{job}:input:{number}"


def upload(client: redis.Redis, job: str, rows: Iterable[FeedRow], expires: int) -> int:
    """Store every row (texts only for first rows; extras for all); returns the chunks."""
    chunk: list[Any] = []
    number = 0
    with client.pipeline(transaction=False) as pipe:
        for row, texts, extra in rows:
            chunk.append([row, list(texts) if texts else None, extra])
            if len(chunk) == CHUNK_ROWS:
                _store(pipe, job, number, chunk, expires)
                chunk, number = [], number + 1
                if number % 20 == 0:
                    pipe.execute()
        if chunk:
            _store(pipe, job, number, chunk, expires)
            number += 1
        pipe.execute()
    return number


def _store(pipe: Any, job: str, number: int, chunk: list[Any], expires: int) -> None:
    data = zlib.compress(json.dumps(chunk, ensure_ascii=False).encode("utf-8"), 6)
    pipe.set(chunk_key(job, number), data, ex=expires)


def read_from(url: str, job: str, start: int, rows: int) -> Iterator[FeedRow]:
    """Rows from ``start`` to ``rows`` (a binary client: the values are compressed bytes).
    A chunk that is gone (expired, or dropped by a feeder that went further) is an error,
    never the end of the input."""
    client = redis.Redis.from_url(url)
    try:
        number = start // CHUNK_ROWS
        while number * CHUNK_ROWS < rows:
            data = client.get(chunk_key(job, number))
            if data is None:
                raise IbtError(f"job {job}: input chunk {number} is gone from Redis")
            for row, texts, extra in json.loads(zlib.decompress(data)):  # type: ignore[arg-type]
                if row >= start:
                    yield row, (tuple(texts) if texts else None), extra  # type: ignore[misc]
            number += 1
    finally:
        client.close()


def dropper(job: str, cursor: int, rows: int) -> OnCommit:
    """Deletes, in the feeder's transaction, every chunk wholly before the new cursor (all
    of them once the cursor reaches the end of the ``rows``)."""
    first = [cursor // CHUNK_ROWS]

    def drop(pipe: Any, new_cursor: int) -> None:
        upto = -(-rows // CHUNK_ROWS) if new_cursor >= rows else new_cursor // CHUNK_ROWS
        for number in range(first[0], upto):
            pipe.delete(chunk_key(job, number))
        first[0] = max(first[0], upto)

    return drop
