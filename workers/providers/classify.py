"""HTTP failure → ProviderError, decided once for every SDK: retryable? after how long?"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from workers.errors import ProviderError

# Statuses where trying again later can succeed. 529 is Anthropic's "overloaded".
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
KIND_BY_STATUS = {
    400: "bad_request",
    401: "auth",
    403: "auth",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    422: "bad_request",
    429: "rate_limit",
    529: "overloaded",
}
CONTEXT_HINTS = (
    "context length",
    "context_length",
    "maximum context",
    "too long",
    "too many tokens",
)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The delay a provider asked for: ``retry-after-ms``, ``retry-after`` seconds or date."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def from_status(
    status: int, message: str, headers: Mapping[str, str] | None, code: str | None = None
) -> ProviderError:
    """Classify an HTTP error response."""
    kind = KIND_BY_STATUS.get(status, "server" if status >= 500 else "http")
    retryable = status in RETRYABLE_STATUS
    lowered = message.lower()
    if status == 429 and (code == "insufficient_quota" or "quota" in lowered):
        # OpenAI answers 429 for an exhausted billing quota; waiting will not fix it.
        kind, retryable = "quota", False
    if status in (400, 413) and any(hint in lowered for hint in CONTEXT_HINTS):
        kind = "context_length"
    return ProviderError(
        f"HTTP {status}: {message}"[:500],
        kind=kind,
        retryable=retryable,
        retry_after=retry_after_seconds(headers) if retryable else None,
        status=status,
    )


def timeout_error(message: str) -> ProviderError:
    return ProviderError(f"request timed out: {message}"[:500], kind="timeout", retryable=True)


def connection_error(message: str) -> ProviderError:
    return ProviderError(f"connection failed: {message}"[:500], kind="connection", retryable=True)
