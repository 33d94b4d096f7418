"""Per-model request and token limits shared by every worker, kept in the broker's Redis.

Celery's own ``rate_limit`` counts per worker instance, so four workers would send four
times the budget. Here every worker draws from one moving window per model (the ``limits``
library's Redis storage, atomic Lua scripts), and a provider 429 with ``Retry-After`` pauses
the model for all workers at once.

A minute's budget is also spread over the minute: at most ``rps`` requests (default
rpm/60, rounded up) in any one second. Without that, a fresh window lets the whole minute's
requests leave in one burst; on a busy host some of them reach the provider seconds late,
inside the provider's next minute, and are refused (measured: 2 429s in 1,200 calls with
the burst, bench/README.md). Providers also enforce RPM over sub-minute periods.
"""

from __future__ import annotations

import math
import time
from functools import cache
from typing import TYPE_CHECKING

import redis

from workers.models import ModelSpec

if TYPE_CHECKING:  # imported when a model has a limit: ~0.15 s off every worker's start
    from limits import RateLimitItemPerSecond
    from limits.strategies import MovingWindowRateLimiter

PAUSE_PREFIX = "ibt:pause:"
# Our window is 2 s longer than the provider's minute: a request is counted here when it
# leaves, and there when it arrives a moment later, so an exact 60 s window lets the
# provider see 61 requests in its minute now and then (measured: 16 429s in 1,200 calls).
WINDOW_SECONDS = 62


def per_minute(amount: int) -> RateLimitItemPerSecond:
    from limits import RateLimitItemPerSecond

    return RateLimitItemPerSecond(amount, WINDOW_SECONDS)


def per_second(spec: ModelSpec) -> RateLimitItemPerSecond | None:
    """The burst limit of ``spec``: its ``rps``, else its rpm spread over the minute."""
    from limits import RateLimitItemPerSecond

    amount = spec.rps or (math.ceil(spec.rpm / 60) if spec.rpm else None)
    return RateLimitItemPerSecond(amount, 1) if amount else None


@cache
def _limiter(url: str) -> MovingWindowRateLimiter:
    from limits.storage import storage_from_string
    from limits.strategies import MovingWindowRateLimiter

    return MovingWindowRateLimiter(storage_from_string(url))


def estimate_tokens(text: str, max_tokens: int) -> int:
    """A conservative token count for a request: about 4 characters a token, plus the reply."""
    return len(text) // 4 + 1 + max_tokens


def wait_seconds(client: redis.Redis, url: str, spec: ModelSpec, tokens: int) -> float:
    """0 when ``spec`` may send a request of ``tokens`` now (and counts it), else how long
    to wait before asking again. Nothing is counted when the answer is "wait"."""
    paused_until = client.get(PAUSE_PREFIX + spec.name)
    if paused_until is not None:
        remaining = float(str(paused_until)) - time.time()
        if remaining > 0:
            return remaining
    burst = per_second(spec)
    if not (spec.rpm or spec.tpm or burst):
        return 0.0
    limiter = _limiter(url)
    items = []
    if burst:
        items.append((burst, 1, "rps"))
    if spec.rpm:
        items.append((per_minute(spec.rpm), 1, "rpm"))
    if spec.tpm:
        items.append((per_minute(spec.tpm), min(tokens, spec.tpm), "tpm"))
    for item, cost, kind in items:
        if not limiter.test(item, "ibt", spec.name, kind, cost=cost):
            stats = limiter.get_window_stats(item, "ibt", spec.name, kind)
            return max(0.05, stats.reset_time - time.time())
    for item, cost, kind in items:
        if not limiter.hit(item, "ibt", spec.name, kind, cost=cost):
            # Lost a race with another worker between test and hit; ask again shortly.
            stats = limiter.get_window_stats(item, "ibt", spec.name, kind)
            return max(0.05, stats.reset_time - time.time())
    return 0.0


def pause(client: redis.Redis, spec: ModelSpec, seconds: float) -> None:
    """Hold every worker of ``spec`` for ``seconds`` (a provider's Retry-After)."""
    until = time.time() + seconds
    # Keep the later deadline if another worker already paused for longer.
    current = client.get(PAUSE_PREFIX + spec.name)
    if current is None or float(str(current)) < until:
        client.set(PAUSE_PREFIX + spec.name, f"{until:.3f}", px=max(1, int(seconds * 1000)))
