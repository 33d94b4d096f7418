"""A job's own state in Redis: what was submitted, what is done, what it cost.

Progress is kept in hashes keyed by pair index, so a redelivered or retried task that
records its outcome twice still counts once. The producer polls these few keys instead of
following Celery results (``AsyncResult.get(follow_parents=True)`` re-reads every header
result on each message and was measured to cut throughput to about a fifth).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

PREFIX = "ibt:job:"


def meta_key(job: str) -> str:
    return f"{PREFIX}{job}"


def done_key(job: str, model: str) -> str:
    return f"{PREFIX}{job}:done:{model}"


def stats_key(job: str) -> str:
    return f"{PREFIX}{job}:stats"


def rows_key(job: str) -> str:
    """Row → first row with the same pair; present only when the input has duplicates."""
    return f"{PREFIX}{job}:rows"


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
    pipe: redis.client.Pipeline | None = None,
) -> bool:
    """Mark (index, model) finished; True the first time. Counts once, tokens always.

    With ``pipe`` the command is only queued (and the return value means nothing): the
    worker sends it with its other end-of-task writes in one round trip.
    """
    outcome = "e" if error else "c" if cached else "o"
    keys = [done_key(job, model), stats_key(job)]
    args = [index, outcome, model, input_tokens, output_tokens, expires]
    if pipe is not None:
        queue_script(pipe, "record_outcome", keys, args)
        return False
    return bool(script(client, "record_outcome")(keys=keys, args=args))


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
    models: list[str] = json.loads(meta.get("models", "[]"))
    stats: dict[str, str] = client.hgetall(stats_key(job))  # type: ignore[assignment]

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
        )
        for model in models
    }
    finished = meta.get("finished")
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
