"""The result cache: a judged (model, settings, prompt, pair) is never paid for twice.

A reply is stored under a hash of everything that shapes the judge's answer, so re-running
an input (or resuming an interrupted job) calls the provider only for what is missing. The
cache keeps the *raw reply* of every call we paid for, unparseable ones included, and the
verdict is parsed from it on every read: a parser fix reaches every cached reply at once and
for free, where a parser version in the key would pay for every call again (docs/parsing.md).
Entries written before that (``{"score", "reasoning"}``) are still read as they are. An
``--samples N`` verdict is stored as its N raw replies (``{"samples": [reply, ...]}``) under a
key that includes N and the sampling temperature, each parsed on read too. A
claim on the same key keeps two tasks (a redelivered message and its original, two jobs
sharing pairs) from paying for the same call at once; it is a short lease that the holding
process renews while the call runs (claims.py), so one left by a dead process lapses soon.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis

from workers import claims
from workers.jobstate import queue_script
from workers.models import ModelSpec
from workers.parsing import Unparseable, Verdict, parse_reply, parse_structured
from workers.prompt import template_digest

CACHE_PREFIX = "ibt:cache:"
CLAIM_PREFIX = "ibt:claim:"
# Stands for the endpoint of a simulated judge: the simulator's port changes every run, and
# its verdicts depend only on the pair, so a re-run must find them under the same key.
SIMULATOR_ENDPOINT = "simulator"


def cache_key(
    spec: ModelSpec,
    base_url: str | None,
    instruction: str,
    generation: str,
    template: str | None,
    samples: int = 1,
) -> str:
    """Hash of everything that changes a verdict: judge, endpoint, sampling, prompt, pair.

    A simulated judge's endpoint is a fixed marker, not its URL, which changes every run.
    Clients use ``decode_responses=True`` (jobstate.client_for_url), so values are str.
    ``samples`` N > 1 (``--samples``, with ``spec`` at its sampling temperature) is part of
    the key: an N-sample verdict is never served for another N, nor for one call.
    """
    endpoint = SIMULATOR_ENDPOINT if spec.simulated else base_url or ""
    material = json.dumps(
        [
            spec.provider,
            spec.model,
            endpoint,
            spec.temperature,
            spec.max_tokens,
            spec.structured,
            template_digest(template),
            instruction,
            generation,
            # How hard a reasoning judge thinks changes its verdict; absent for other models,
            # so their keys (and cached verdicts) are what they were.
            *([spec.reasoning_effort] if spec.reasoning_effort else []),
            *([spec.thinking_budget] if spec.thinking_budget else []),
            # Likewise absent for one call, so today's keys stay what they were.
            *(["samples", samples] if samples > 1 else []),
        ],
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def lookup(
    client: redis.Redis,
    key: str,
    owner: str,
    hold_for: float,
    pause_key: str,
    cancelled_key: str,
) -> tuple[dict[str, Any] | None, bool, bool, bool]:
    """(cache entry or None, whether ``owner`` holds the claim, whether the model is
    paused, whether the job is cancelled); ``verdict_of`` reads the entry.

    One round trip for what a task needs to know before it may call the provider. The claim
    owner is the task id, so a redelivery of a task whose worker died re-takes its own claim
    at once instead of waiting for it to expire. A claim is taken for one lease and then
    renewed by this process until ``settle``, for at most ``hold_for`` seconds.
    """
    claim = CLAIM_PREFIX + key
    with client.pipeline(transaction=False) as pipe:
        pipe.get(CACHE_PREFIX + key)
        pipe.set(claim, owner, nx=True, ex=claims.LEASE_SECONDS)
        pipe.get(claim)
        pipe.exists(pause_key)
        pipe.exists(cancelled_key)
        raw, _, holder, paused, cancelled = pipe.execute()
    if holder == owner:
        claims.leases(client).hold(claim, owner, hold_for)
    cached = None
    if raw is not None:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        cached = (
            value
            if isinstance(value, dict)
            and ("reply" in value or "score" in value or "samples" in value)
            else None
        )
    return cached, holder == owner, bool(paused), bool(cancelled)


def verdict_of(entry: dict[str, Any]) -> Verdict | Unparseable:
    """The verdict a cache entry holds, read by today's parser.

    ``{"reply", "structured"}`` is a raw reply, parsed now; ``{"score", "reasoning"}`` is an
    entry from before replies were kept, read as the verdict it stored.
    """
    if "reply" in entry:
        reply = str(entry["reply"])
        return parse_structured(reply) if entry.get("structured") else parse_reply(reply)
    return Verdict(score=int(entry["score"]), reasoning=str(entry.get("reasoning") or ""))


def verdicts_of(entry: dict[str, Any]) -> list[Verdict | Unparseable] | None:
    """The verdicts of an N-sample entry (``{"samples": [reply, ...]}``, each reply as
    ``verdict_of`` reads it), read by today's parser; None for a one-call entry."""
    samples = entry.get("samples")
    if not isinstance(samples, list):
        return None
    return [verdict_of(item) for item in samples if isinstance(item, dict)]


def settle(
    client: redis.Redis,
    key: str,
    owner: str,
    value: dict[str, Any] | None,
    ttl: int,
    pipe: redis.client.Pipeline | None = None,
) -> None:
    """Store the reply (if any) and give up the claim, in one round trip (or queued on
    ``pipe`` for the caller to send with its other writes).

    Renewal stops at once; should the release itself not reach the server, the claim lapses
    within a lease.
    """
    own = pipe is None
    pipe = pipe if pipe is not None else client.pipeline(transaction=False)
    if value is not None:
        pipe.set(CACHE_PREFIX + key, json.dumps(value, ensure_ascii=False), ex=ttl)
    claims.leases(client).release(CLAIM_PREFIX + key, owner)
    queue_script(pipe, "release_claim", [CLAIM_PREFIX + key], [owner])
    if own:
        pipe.execute()
