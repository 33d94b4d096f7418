"""Self-consistency (``ibt score --samples N``): the sampling temperature, and the replies a
task keeps between its retries.

One task per (pair, model) asks the judge N times, one call after the other, and its record
carries the median (workers/records.py ``sampled_record``). Sampling needs a temperature
above 0: a model whose models-file ``temperature`` is 0 or unset is sampled at
``DEFAULT_SAMPLING_TEMPERATURE`` (unset means the provider's default, which differs between
servers, so an explicit one also makes the cache key say what was asked). Reasoning models
and extended thinking refuse a temperature: they are sent none and sample at the provider's.

A transient failure at sample k retries the task, which then asks only for what is missing:
each reply is kept in Redis as it arrives, under the task's id, so none that was paid for is
asked or paid again, and the record's tokens and cost count every reply exactly once.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import redis

from workers.models import ModelSpec
from workers.providers import Completion
from workers.records import ScoreRequest

DEFAULT_SAMPLING_TEMPERATURE = 0.7
# Kept replies outlive a task's retries (backoff is capped well inside this).
KEPT_TTL_SECONDS = 24 * 3600


def sampling_temperature(spec: ModelSpec) -> float | None:
    """The temperature N samples of ``spec`` are asked at (None: none sent, see above)."""
    if spec.reasons:
        return None
    if spec.temperature:
        return float(spec.temperature)
    return DEFAULT_SAMPLING_TEMPERATURE


def sampling_spec(spec: ModelSpec, samples: int) -> ModelSpec:
    """``spec`` as N > 1 samples are asked (its own temperature, or the default); as it is
    for one."""
    if samples <= 1:
        return spec
    return replace(spec, temperature=sampling_temperature(spec))


def kept_key(request: ScoreRequest) -> str:
    return f"ibt:samples:{request.task_id}"


def load(client: redis.Redis, request: ScoreRequest) -> list[Completion]:
    """The replies earlier attempts of this task kept, in the order they came."""
    raw: list[str] = client.lrange(kept_key(request), 0, -1)  # type: ignore[assignment]
    return [from_json(item) for item in raw[: request.samples]]


def keep(client: redis.Redis, request: ScoreRequest, completion: Completion) -> None:
    """Keep one paid reply until the task finishes (a retry then does not ask it again)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.rpush(kept_key(request), to_json(completion))
        pipe.expire(kept_key(request), KEPT_TTL_SECONDS)
        pipe.execute()


def forget(pipe: Any, request: ScoreRequest) -> None:
    """Drop the kept replies (queued on ``pipe``, with the record that now holds them)."""
    pipe.delete(kept_key(request))


def to_json(completion: Completion) -> str:
    return json.dumps(
        {
            "text": completion.text,
            "in": completion.input_tokens,
            "out": completion.output_tokens,
            "structured": completion.structured,
            "truncated": completion.truncated,
            "reasoning": completion.reasoning_tokens,
        },
        ensure_ascii=False,
        default=str,
    )


def from_json(raw: str) -> Completion:
    data = json.loads(raw)
    return Completion(
        text=str(data.get("text", "")),
        input_tokens=int(data.get("in", 0)),
        output_tokens=int(data.get("out", 0)),
        structured=data.get("structured"),
        truncated=bool(data.get("truncated", False)),
        reasoning_tokens=int(data.get("reasoning", 0)),
    )
