"""The result cache: a judged (model, settings, prompt, pair) is never paid for twice.

A verdict is stored under a hash of everything that shapes the judge's answer, so re-running
an input (or resuming an interrupted job) calls the provider only for what is missing. A
short-lived claim on the same key keeps two tasks (a redelivered message and its original,
two jobs sharing pairs) from paying for the same call at once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis

from workers.jobstate import queue_script
from workers.models import ModelSpec
from workers.prompt import template_digest

CACHE_PREFIX = "ibt:cache:"
CLAIM_PREFIX = "ibt:claim:"


def cache_key(
    spec: ModelSpec, base_url: str | None, instruction: str, generation: str, template: str | None
) -> str:
    """Hash of everything that changes a verdict: judge, endpoint, sampling, prompt, pair.

    Clients use ``decode_responses=True`` (jobstate.client_for_url), so values are str.
    """
    material = json.dumps(
        [
            spec.provider,
            spec.model,
            base_url or "",
            spec.temperature,
            spec.max_tokens,
            spec.structured,
            template_digest(template),
            instruction,
            generation,
        ],
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def lookup(
    client: redis.Redis, key: str, owner: str, ttl: float, pause_key: str
) -> tuple[dict[str, Any] | None, bool, bool]:
    """(cached verdict, whether ``owner`` holds the claim, whether the model is paused).

    One round trip for what a task needs to know before it may call the provider. The claim
    owner is the task id, so a redelivery of a task whose worker died re-takes its own claim
    at once instead of waiting for it to expire.
    """
    with client.pipeline(transaction=False) as pipe:
        pipe.get(CACHE_PREFIX + key)
        pipe.set(CLAIM_PREFIX + key, owner, nx=True, ex=max(1, int(ttl)))
        pipe.get(CLAIM_PREFIX + key)
        pipe.exists(pause_key)
        raw, _, holder, paused = pipe.execute()
    cached = None
    if raw is not None:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        cached = value if isinstance(value, dict) else None
    return cached, holder == owner, bool(paused)


def settle(
    client: redis.Redis,
    key: str,
    owner: str,
    value: dict[str, Any] | None,
    ttl: int,
    pipe: redis.client.Pipeline | None = None,
) -> None:
    """Store the verdict (if any) and give up the claim, in one round trip (or queued on
    ``pipe`` for the caller to send with its other writes)."""
    own = pipe is None
    pipe = pipe if pipe is not None else client.pipeline(transaction=False)
    if value is not None:
        pipe.set(CACHE_PREFIX + key, json.dumps(value, ensure_ascii=False), ex=ttl)
    queue_script(pipe, "release_claim", [CLAIM_PREFIX + key], [owner])
    if own:
        pipe.execute()
