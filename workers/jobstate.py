"""A job's own state in Redis: what was submitted, what is done, what it cost.

Each finished (pair, model) leaves its record in a hash keyed by pair index, so a redelivered
or retried task that reports twice still counts once, and the output is streamed from there.
The producer polls these few keys instead of following Celery results
(``AsyncResult.get(follow_parents=True)`` re-reads every header result on each message and
was measured to cut throughput to about a fifth).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from workers.pricing import from_nano

PREFIX = "ibt:job:"
# Rows read per round trip when streaming a job's records.
READ_BATCH = 1000


def meta_key(job: str) -> str:
    return f"{PREFIX}{job}"


def stats_key(job: str) -> str:
    return f"{PREFIX}{job}:stats"


def records_key(job: str, model: str) -> str:
    """Pair index → the public record (JSON) of that pair under ``model``."""
    return f"{PREFIX}{job}:records:{model}"


def dups_key(job: str) -> str:
    """Row → the first row with the same pair, for the rows that repeat one (a hash)."""
    return f"{PREFIX}{job}:dups"


def extra_key(job: str) -> str:
    """Row → the JSON object of that input row's extra fields; present only if any row has some."""
    return f"{PREFIX}{job}:extra"


def client_for_url(url: str) -> redis.Redis:
    """A client that rides out a broker restart: reconnects with backoff for about a minute."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=5.0, base=0.1), retries=20),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


@dataclass
class ModelProgress:
    done: int = 0
    errors: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached: int = 0
    attempts: int = 0
    cost_nano: int = 0
    # Items waiting in batch mode: buffered, or inside a provider batch.
    batch_waiting: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The run summary's entry for this model (what ``ibt score`` prints at the end)."""
        return {
            "items": self.done,
            "scored": self.done - self.errors,
            "errors": dict(sorted(self.errors_by_kind.items())),
            "attempts": self.attempts,
            "cached": self.cached,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": from_nano(self.cost_nano),
        }


@dataclass
class JobProgress:
    """A snapshot of one job, as ``ibt status`` shows it."""

    job: str
    status: str
    total: int
    models: list[str]
    pairs: int
    unique: int
    created: float
    finished: float | None
    per_model: dict[str, ModelProgress] = field(default_factory=dict)
    # The job's budget hash as stored (workers/budget.parse reads it); None without a cap.
    budget_raw: dict[str, str] | None = None

    @property
    def done(self) -> int:
        return sum(p.done for p in self.per_model.values())

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.per_model.values())


def register(
    client: redis.Redis,
    job: str,
    *,
    models: list[str],
    pairs: int,
    unique: int,
    expires: int,
    extra: dict[str, Any],
) -> None:
    """Record a new job before its first task is sent."""
    mapping: dict[str, Any] = {
        "status": "submitting",
        "models": json.dumps(models),
        "pairs": pairs,
        "unique": unique,
        "total": unique * len(models),
        "created": time.time(),
        **{key: json.dumps(value) for key, value in extra.items()},
    }
    with client.pipeline() as pipe:
        pipe.hset(meta_key(job), mapping=mapping)  # type: ignore[arg-type]
        pipe.expire(meta_key(job), expires)
        pipe.execute()


def set_status(client: redis.Redis, job: str, status: str, **fields: Any) -> None:
    mapping: dict[str, Any] = {"status": status, **fields}
    client.hset(meta_key(job), mapping=mapping)  # type: ignore[arg-type]


def record_outcome(
    client: redis.Redis,
    job: str,
    model: str,
    index: int,
    *,
    error: bool,
    input_tokens: int,
    output_tokens: int,
    cached: bool,
    expires: int,
    record: str,
    attempts: int = 1,
    error_kind: str = "",
    cost: int = 0,
    usage_once: bool = False,
    pipe: redis.client.Pipeline | None = None,
) -> int:
    """Mark (index, model) finished with ``record`` (public JSON): bit 1 set the first time,
    bit 2 once every item of the job has reported (see ``completes``).

    Counts and keeps the record once; usage (tokens, ``cost`` in nano-dollars) on every
    report, or only the first with ``usage_once`` (a batch result read again was paid once).
    With ``pipe`` the command is only queued (and the return value means nothing): the
    worker sends it with its other end-of-task writes in one round trip.
    """
    outcome = "e" if error else "c" if cached else "o"
    keys = [records_key(job, model), stats_key(job), meta_key(job), f"{PREFIX}{job}:feed-pending"]
    args = [index, outcome, model, input_tokens, output_tokens, expires, record, attempts]
    args.append((error_kind or "error") if error else "")
    args += [cost, "1" if usage_once else "0"]
    if pipe is not None:
        queue_script(pipe, "record_outcome", keys, args)
        return 0
    return int(script(client, "record_outcome")(keys=keys, args=args))


def completes(outcome: Any) -> bool:
    """Whether a ``record_outcome`` result says the job has every item now."""
    return isinstance(outcome, int) and bool(outcome & 2)


def wants_feed(outcome: Any) -> bool:
    """Whether a ``record_outcome`` result asks for the job's window to be topped up."""
    return isinstance(outcome, int) and bool(outcome & 4)


def all_reported(client: redis.Redis, job: str) -> bool:
    """Every item of ``job`` has its record (the counters say so)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hget(stats_key(job), "all:done")
        pipe.hget(meta_key(job), "total")
        done, total = pipe.execute()
    return total is not None and int(done or 0) >= int(total)


def first_rows(client: redis.Redis, job: str, start: int, stop: int) -> list[int]:
    """For rows ``start``..``stop``-1: the row whose verdict each carries (itself, unless its
    pair came earlier in the input)."""
    rows = list(range(start, stop))
    if not client.exists(dups_key(job)):
        return rows
    heads: list[Any] = client.hmget(dups_key(job), [str(row) for row in rows])  # type: ignore[arg-type,assignment]
    return [int(head) if head is not None else row for row, head in zip(rows, heads, strict=True)]


def iter_records(client: redis.Redis, job: str) -> Iterator[dict[str, Any]]:
    """The job's documented list in input order (row, then model), a batch at a time.

    The records stay in Redis until read, so neither a worker nor the producer ever holds
    a whole job's list (10^5 rows x 2 models wrote 160 MB of JSON Lines in bench/scale.py).
    """
    meta = read_meta(client, job) or {}
    rows = int(meta.get("pairs", 0))
    for start in range(0, rows, READ_BATCH):
        for row in read_rows(client, job, meta, start, min(rows, start + READ_BATCH)):
            yield from row.records


@dataclass
class Row:
    """One input row's output records (one per model), and the row whose verdicts they are."""

    row: int
    head: int
    records: list[dict[str, Any]]
    complete: bool


def read_rows(
    client: redis.Redis, job: str, meta: dict[str, str], start: int, stop: int
) -> list[Row]:
    """Rows ``start``..``stop``-1 with their records as far as they exist. A missing record
    is ``lost_record`` (incomplete), or ``cancelled`` for a pair a cancelled job never fed."""
    models: list[str] = json.loads(meta.get("models", "[]"))
    feed_end = int(meta["feed_end"]) if "feed_end" in meta else None
    heads = first_rows(client, job, start, stop)
    with_extra = meta.get("extra") == "1"
    with client.pipeline(transaction=False) as pipe:
        for model in models:
            pipe.hmget(records_key(job, model), heads)  # type: ignore[arg-type]
        if with_extra:
            pipe.hmget(extra_key(job), list(range(start, stop)))
        columns = pipe.execute()
    extras = columns.pop() if with_extra else [None] * len(heads)
    out = []
    for position, head in enumerate(heads):
        raw_extra = extras[position]
        extra = json.loads(raw_extra) if raw_extra else None
        records = []
        complete = True
        for model, column in zip(models, columns, strict=True):
            raw = column[position]
            if raw is not None:
                record = json.loads(raw)
            elif feed_end is not None and head >= feed_end:
                record = never_fed_record(model)
            else:
                record = lost_record(model)
                complete = False
            if extra:
                record.update(extra)
            records.append(record)
        out.append(Row(start + position, head, records, complete))
    return out


def never_fed_record(model: str) -> dict[str, Any]:
    """A row of a cancelled job whose pair was never sent (windowed submission stopped)."""
    error = "cancelled: the job was cancelled before this pair was sent"
    return {**lost_record(model), "error": error}


def lost_record(model: str) -> dict[str, Any]:
    """What a row shows if its record is gone; a finished job never has one (see collect)."""
    return {
        "reasoning": None,
        "score": None,
        "instruction": None,
        "generation": None,
        "model": model,
        "error": "lost: no result was recorded",
    }


def record_retry(client: redis.Redis, job: str, model: str, expires: int) -> None:
    with client.pipeline(transaction=False) as pipe:
        pipe.hincrby(stats_key(job), f"{model}:retries", 1)
        pipe.expire(stats_key(job), expires)
        pipe.execute()


def read_meta(client: redis.Redis, job: str) -> dict[str, str] | None:
    meta = client.hgetall(meta_key(job))
    return meta or None  # type: ignore[return-value]


def progress(client: redis.Redis, job: str) -> JobProgress | None:
    """A snapshot of ``job`` from its counters: O(models), cheap enough to poll."""
    meta = read_meta(client, job)
    if meta is None:
        return None
    from workers.batch.lane import Lane
    from workers.budget import budget_key

    models: list[str] = json.loads(meta.get("models", "[]"))
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(stats_key(job))
        for model in models:
            pipe.hlen(Lane(job, model).where)
        stats, *waiting = pipe.execute()
    in_batches = dict(zip(models, waiting, strict=True))

    def count(model: str, name: str) -> int:
        return int(stats.get(f"{model}:{name}", 0))

    per_model = {
        model: ModelProgress(
            done=count(model, "done"),
            errors=count(model, "errors"),
            retries=count(model, "retries"),
            input_tokens=count(model, "in"),
            output_tokens=count(model, "out"),
            cached=count(model, "cached"),
            attempts=count(model, "attempts"),
            cost_nano=count(model, "cost"),
            batch_waiting=int(in_batches[model]),
            errors_by_kind={
                name.removeprefix(f"{model}:error:"): int(value)
                for name, value in stats.items()
                if name.startswith(f"{model}:error:")
            },
        )
        for model in models
    }
    finished = meta.get("finished")
    budget_raw: dict[str, str] | None = None
    if meta.get("budget") == "1":
        budget_raw = client.hgetall(budget_key(job))  # type: ignore[assignment]
    return JobProgress(
        job=job,
        status=meta.get("status", "unknown"),
        total=int(meta.get("total", 0)),
        models=models,
        pairs=int(meta.get("pairs", 0)),
        unique=int(meta.get("unique", meta.get("pairs", 0))),
        created=float(meta.get("created", 0)),
        finished=float(finished) if finished else None,
        per_model=per_model,
        budget_raw=budget_raw,
    )


_SCRIPTS: dict[tuple[int, str], Any] = {}


@cache
def script_text(name: str) -> str:
    return (Path(__file__).parent / "lua" / f"{name}.lua").read_text()


def queue_script(pipe: redis.client.Pipeline, name: str, keys: list[str], args: list[Any]) -> None:
    """Queue a Lua script on a pipeline as EVAL with its text.

    redis-py's Script objects make every ``execute()`` of a pipeline send an extra
    ``SCRIPT EXISTS`` round trip first; the text costs a few hundred bytes instead.
    """
    pipe.eval(script_text(name), len(keys), *keys, *args)


def script(client: redis.Redis, name: str) -> Any:
    """A registered Lua script from ``workers/lua/``; EVALSHA with automatic reload."""
    key = (id(client), name)
    script = _SCRIPTS.get(key)
    if script is None:
        script = _SCRIPTS[key] = client.register_script(script_text(name))
    return script
