"""Anthropic's Message Batches: Messages requests posted inline, results as JSON Lines."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import datetime

import anthropic

from workers.batch.protocol import BatchState, LineResult
from workers.errors import ProviderError
from workers.models import ModelSpec
from workers.providers.anthropic import call, completion_of, request_params
from workers.providers.classify import from_status

# Error types of an ``errored`` result that a later attempt can get past.
TRANSIENT_ERRORS = {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}
STATUS_BY_ERROR = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# A batch we may have created is looked for among those created this long around our try.
FIND_WINDOW_SECONDS = 120


class AnthropicBatches:
    """SDK retries are off: a create that timed out may have succeeded, and is looked for
    (``find``) before it is made again."""

    def __init__(self, spec: ModelSpec, *, api_key: str, base_url: str | None) -> None:
        self.spec = spec
        self.client = anthropic.Anthropic(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=300
        )

    def create(self, bid: str, requests: Sequence[tuple[str, str]]) -> str:
        batch = call(
            lambda: self.client.messages.batches.create(
                requests=[
                    {"custom_id": custom, "params": request_params(self.spec, prompt)}  # type: ignore[misc,typeddict-item]
                    for custom, prompt in requests
                ]
            )
        )
        return batch.id

    def find(self, bid: str, since: float, count: int) -> str | None:
        """Message batches carry no metadata: a batch created within the window around our
        try with exactly our request count is ours (creates are serialized per model, and
        ``tasks`` refuses one whose results do not carry our custom ids)."""
        for batch in call(lambda: self.client.messages.batches.list(limit=100)):
            created = _timestamp(batch.created_at)
            if created < since - FIND_WINDOW_SECONDS:
                return None
            counts = batch.request_counts
            total = (
                counts.processing
                + counts.succeeded
                + counts.errored
                + counts.canceled
                + counts.expired
            )
            if total == count and created <= since + FIND_WINDOW_SECONDS:
                return batch.id
        return None

    def state(self, provider_id: str) -> BatchState:
        batch = call(lambda: self.client.messages.batches.retrieve(provider_id))
        counts = batch.request_counts
        return BatchState(
            status=batch.processing_status,
            ended=batch.processing_status == "ended",
            counts={
                "processing": counts.processing,
                "succeeded": counts.succeeded,
                "errored": counts.errored,
                "canceled": counts.canceled,
                "expired": counts.expired,
            },
        )

    def cancel(self, provider_id: str) -> None:
        call(lambda: self.client.messages.batches.cancel(provider_id))

    def results(self, provider_id: str) -> Iterator[LineResult]:
        # results() follows the batch's results_url, which is absolute.
        for row in call(lambda: self.client.messages.batches.results(provider_id)):
            result = row.result
            if result.type == "succeeded":
                yield LineResult(row.custom_id, completion=completion_of(result.message))
            elif result.type == "errored":
                # The error is nested twice: result.error (ErrorResponse) .error (the error).
                inner = result.error.error
                kind = inner.type
                status = STATUS_BY_ERROR.get(kind, 500)
                error = from_status(status, inner.message, None)
                if kind in TRANSIENT_ERRORS and not error.retryable:
                    error = ProviderError(error.message, kind=error.kind, retryable=True)
                yield LineResult(row.custom_id, error=error)
            elif result.type == "canceled":
                yield LineResult(row.custom_id, cancelled=True)
            else:  # expired: the request did not run within the batch's 24 h
                yield LineResult(
                    row.custom_id,
                    error=ProviderError(
                        "expired: the batch ended before this request ran",
                        kind="expired",
                        retryable=True,
                    ),
                )


def _timestamp(value: datetime | str) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()
