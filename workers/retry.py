"""Every retry delay is decided here: exponential backoff with full jitter, Retry-After wins."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int,
    retry_after: float | None,
    *,
    base: float,
    cap: float,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    Full jitter spreads a burst of failures over the window instead of retrying in lockstep.
    A provider's Retry-After is a floor, never shortened; a little jitter on top of it keeps
    every worker that got the same 429 from coming back in the same instant.
    """
    rng = rng or random.Random()
    backoff = rng.uniform(0, min(cap, base * (2**attempt)))
    if retry_after is None:
        return max(backoff, 0.05)
    return retry_after + rng.uniform(0, min(1.0, 0.1 * retry_after + 0.05))
