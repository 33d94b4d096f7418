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


def get(client: redis.Redis, key: str) -> dict[str, Any] | None:
    raw = client.get(CACHE_PREFIX + key)
    if raw is None:
        return None
    try:
        value = json.loads(str(raw))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def put(client: redis.Redis, key: str, value: dict[str, Any], ttl: int) -> None:
    client.set(CACHE_PREFIX + key, json.dumps(value, ensure_ascii=False), ex=ttl)


def claim(client: redis.Redis, key: str, owner: str, ttl: float) -> bool:
    """True if ``owner`` may call the provider for ``key`` now (or already holds the claim).

    The owner is the task id, so a redelivery of a task whose worker died re-takes its own
    claim at once instead of waiting for it to expire.
    """
    name = CLAIM_PREFIX + key
    if client.set(name, owner, nx=True, ex=max(1, int(ttl))):
        return True
    return bool(client.get(name) == owner)


def release(client: redis.Redis, key: str, owner: str) -> None:
    name = CLAIM_PREFIX + key
    if client.get(name) == owner:
        client.delete(name)
