"""The documented list written while the job runs, in input order, and dropped from Redis.

A row is written as soon as every row before it is finished; its records then leave Redis
(a repeated pair's verdict stays until the last row that carries it), so Redis holds about a
window of records however large the job. The writer's position lives in the job's meta
(``written`` rows, ``out_bytes`` of the file, ``out_parts`` of a Parquet output) and moves in
the same transaction that deletes the written records, after the file is flushed to disk: a
writer that crashes is resumed (``ibt result JOB --follow -o OUT``, or ``--resume``) by
cutting the file back to the recorded size and going on from the recorded row, with no gap
and no repeat. One writer per job at a time holds a lease.

Formats: JSON Lines is appended a line at a time; a JSON array gets its closing bracket
when the job ends; Parquet is written as one part file per flush under ``OUT.parts/`` and
joined, row group by row group, into ``OUT`` at the end (a Parquet file cannot be appended
to once its footer is missing, which is what a crash would leave).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import redis

from producer.formats import LINES_SUFFIXES, PARQUET_SUFFIXES
from workers import jobstate
from workers.errors import IbtError
from workers.leases import Lease

LEASE_SECONDS = 10
# Rows read per round trip while draining.
BATCH = jobstate.READ_BATCH


class WriterBusy(IbtError):
    """Another live process is writing this job's output."""


def writer_key(job: str) -> str:
    return f"ibt:job:{job}:writer"


class StreamedOutput:
    """Writes ``job``'s finished rows to ``path`` (None or ``-``: stdout) as they complete."""

    def __init__(self, client: redis.Redis, job: str, path: str | None) -> None:
        self.client = client
        self.job = job
        self.path = None if path in (None, "-") else path
        self.lease = Lease(client, writer_key(job), LEASE_SECONDS)
        meta = jobstate.read_meta(client, job) or {}
        self.rows = int(meta.get("pairs", 0))
        self.models: list[str] = json.loads(meta.get("models", "[]"))
        self.written = 0  # read under the lease (claim)
        self.records = 0
        # Each model's first error text, for the summary's one-line example of a systemic
        # failure (the records themselves leave Redis as they are written).
        self.first_errors: dict[str, str] = {}
        self._last_use = self._load_last_use()
        suffix = Path(self.path).suffix.lower() if self.path else ""
        self.kind = "parquet" if suffix in PARQUET_SUFFIXES else "jsonl"
        if suffix not in LINES_SUFFIXES and self.kind != "parquet":
            self.kind = "json"
        self._sink: _Sink | None = None
        self._offset = 0
        self._parts = 0

    # ------------------------------------------------------------------ lease and resume

    def claim(self) -> None:
        """Take the job's writer lease (waiting for a killed writer's to lapse), then read
        where the last committed write ended, under the lease, and open the output there."""
        if not self.lease.claim(wait=LEASE_SECONDS + 1):
            raise WriterBusy(f"job {self.job}'s output is being written by another process")
        try:
            meta = jobstate.read_meta(self.client, self.job) or {}
            self.written = int(meta.get("written", 0))
            self._offset = int(meta.get("out_bytes", 0))
            self._parts = int(meta.get("out_parts", 0))
            self._check_resume(meta.get("out_path"))
            if self.path:
                self.client.hset(jobstate.meta_key(self.job), "out_path", str(self.path))
            self._sink = self._open_sink()
        except BaseException:
            self.lease.release()
            raise

    def _check_resume(self, previous: str | None) -> None:
        """A job's rows go to one place: resuming elsewhere would leave a gap."""
        if not self.written:
            return
        where = previous or "stdout"
        if self.path is None or previous is None:
            raise WriterBusy(
                f"job {self.job}'s first {self.written} rows were written to {where}; "
                + ("resume with -o naming that file" if previous else "they cannot be resumed")
            )
        if Path(previous).resolve() != Path(self.path).resolve():
            raise WriterBusy(
                f"job {self.job}'s first {self.written} rows were written to {previous}; "
                "go on writing there"
            )
        written_there = (
            Path(self.path).with_name(Path(self.path).name + ".parts").is_dir()
            if self.kind == "parquet"
            else Path(self.path).exists()
        )
        if not written_there:
            raise WriterBusy(
                f"job {self.job}'s first {self.written} rows were written to {previous}, "
                "which is gone; they left Redis as they were written"
            )

    def release(self) -> None:
        self.lease.release()

    def _open_sink(self) -> _Sink:
        if self.path is None:
            return _StdoutSink(sys.stdout)
        target = Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "parquet":
            return _ParquetSink(target, self._parts)
        return _FileSink(target, self._offset, array=self.kind == "json")

    def _load_last_use(self) -> dict[int, int]:
        """First row → the last row that carries its verdict (only for repeated pairs)."""
        last: dict[int, int] = {}
        for row, head in self.client.hscan_iter(jobstate.dups_key(self.job), count=5000):
            r, h = int(row), int(head)
            if r > last.get(h, -1):
                last[h] = r
        return last

    # ------------------------------------------------------------------ writing

    def drain(self) -> int:
        """Write every row that is ready now; returns how many rows were written."""
        assert self._sink is not None, "claim() first"
        self.lease.check(f"job {self.job}'s output")
        total = 0
        while self.written < self.rows:
            meta = jobstate.read_meta(self.client, self.job) or {}
            stop = min(self.rows, self.written + BATCH)
            rows = jobstate.read_rows(self.client, self.job, meta, self.written, stop)
            ready: list[jobstate.Row] = []
            for row in rows:
                if not row.complete:
                    break
                ready.append(row)
            if ready:
                self._commit(ready)
                total += len(ready)
            if len(ready) < len(rows) or not rows:
                break
        return total

    def _commit(self, ready: list[jobstate.Row]) -> None:
        assert self._sink is not None
        records = [record for row in ready for record in row.records]
        for record in records:
            if record.get("error") and record.get("model") not in self.first_errors:
                self.first_errors[str(record.get("model"))] = str(record["error"])
        position = self._sink.write(records)
        self.records += len(records)
        self.written += len(ready)
        done_heads = [
            str(row.head) for row in ready if self._last_use.get(row.head, row.head) == row.row
        ]
        mapping: dict[str, Any] = {"written": self.written}
        mapping["out_parts" if self.kind == "parquet" else "out_bytes"] = position
        for attempt in range(3):
            try:
                with self.client.pipeline(transaction=True) as pipe:
                    # Only the lease holder moves the position (a writer stalled past its
                    # lease must not, or two writers would interleave).
                    self.lease.watch(pipe, f"job {self.job}'s output")
                    pipe.hset(jobstate.meta_key(self.job), mapping=mapping)
                    if done_heads:
                        for model in self.models:
                            pipe.hdel(jobstate.records_key(self.job, model), *done_heads)
                    pipe.hdel(jobstate.extra_key(self.job), *[str(row.row) for row in ready])
                    pipe.execute()
                return
            except redis.WatchError:
                if attempt == 2:  # the lease key was touched: our own renewal, most likely
                    raise

    def finish(self) -> int:
        """Close the output once every row is written (the job is done); returns records."""
        assert self._sink is not None
        self.drain()
        if self.written < self.rows:
            raise IbtError(f"job {self.job}: {self.rows - self.written} rows have no record")
        self._sink.close()
        self.release()
        return self.records

    def abandon(self) -> None:
        """Stop without closing the file: a later writer resumes where this one stopped."""
        if self._sink is not None:
            self._sink.abandon()
        with contextlib.suppress(Exception):
            self.release()


class _Sink:
    def write(self, records: list[dict[str, Any]]) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abandon(self) -> None:
        pass


class _StdoutSink(_Sink):
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.count = 0

    def write(self, records: list[dict[str, Any]]) -> int:
        for record in records:
            self.stream.write(",\n" if self.count else "[\n")
            self.stream.write(_indented(record))
            self.count += 1
        self.stream.flush()
        return 0

    def close(self) -> None:
        self.stream.write("\n]\n" if self.count else "[]\n")
        self.stream.flush()


def _indented(record: dict[str, Any]) -> str:
    # Only structural line breaks are raw "\n" (json escapes those inside strings).
    return "  " + json.dumps(record, ensure_ascii=False, indent=2).replace("\n", "\n  ")


class _FileSink(_Sink):
    """JSON Lines or a JSON array, cut back to ``offset`` bytes (the last committed write)."""

    def __init__(self, target: Path, offset: int, *, array: bool) -> None:
        self.target = target
        self.array = array
        mode = "r+b" if offset and target.exists() else "wb"
        self.handle = target.open(mode)
        if offset and mode == "r+b":
            self.handle.truncate(offset)
            self.handle.seek(offset)
        self.offset = self.handle.tell()

    def write(self, records: list[dict[str, Any]]) -> int:
        chunks: list[str] = []
        for record in records:
            if self.array:
                chunks.append(",\n" if self.offset or chunks else "[\n")
                chunks.append(_indented(record))
            else:
                chunks.append(json.dumps(record, ensure_ascii=False) + "\n")
        data = "".join(chunks).encode("utf-8")
        self.handle.write(data)
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.offset += len(data)
        return self.offset

    def close(self) -> None:
        if self.array:
            self.handle.write(b"\n]\n" if self.offset else b"[]\n")
        self.handle.close()

    def abandon(self) -> None:
        self.handle.close()


class _ParquetSink(_Sink):
    """One part file per write under ``OUT.parts/``; joined into ``OUT`` at the end."""

    def __init__(self, target: Path, parts: int) -> None:
        self.target = target
        self.directory = target.with_name(target.name + ".parts")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.parts = parts
        for stale in self.directory.glob("part-*.parquet"):  # written, never committed
            if int(stale.stem.split("-")[1]) >= parts:
                stale.unlink()

    def write(self, records: list[dict[str, Any]]) -> int:
        from producer.formats import write_parquet_part

        path = self.directory / f"part-{self.parts:06d}.parquet"
        write_parquet_part(records, path)
        self.parts += 1
        return self.parts

    def close(self) -> None:
        from producer.formats import join_parquet_parts

        parts = [self.directory / f"part-{n:06d}.parquet" for n in range(self.parts)]
        join_parquet_parts(parts, self.target)
        for part in parts:
            part.unlink()
        with contextlib.suppress(OSError):
            self.directory.rmdir()
