"""What ibt needs from a provider's Batch API, whatever its wire format."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from workers.errors import ProviderError
from workers.models import ModelSpec
from workers.providers import Completion, credentials

# The providers' documented limits per batch.
LIMITS = {
    "openai": (50_000, 200 * 1024 * 1024),
    "anthropic": (100_000, 256 * 1024 * 1024),
}
# Bytes a request line adds to its prompt (JSON envelope, parameters, a structured schema).
LINE_OVERHEAD_BYTES = 2048


@dataclass(frozen=True)
class BatchState:
    """A provider batch as last read: its status, whether it has ended, its counts, and the
    validation errors that failed it (``failed`` is then True and no request ran)."""

    status: str
    ended: bool
    counts: dict[str, int] = field(default_factory=dict)
    failed: bool = False
    errors: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LineResult:
    """One request's outcome: a completion, or a classified error. ``cancelled`` marks a
    request the provider never ran because the batch was cancelled."""

    custom_id: str
    completion: Completion | None = None
    error: ProviderError | None = None
    cancelled: bool = False


class BatchAPI(Protocol):
    def create(self, bid: str, requests: Sequence[tuple[str, str]]) -> str:
        """Create a batch of (custom_id, prompt); the provider's batch id."""
        ...

    def find(self, bid: str, since: float, count: int) -> str | None:
        """The provider id of batch ``bid`` if a create we could not confirm made it."""
        ...

    def state(self, provider_id: str) -> BatchState: ...

    def cancel(self, provider_id: str) -> None: ...

    def results(self, provider_id: str) -> Iterator[LineResult]: ...


_apis: dict[ModelSpec, BatchAPI] = {}


def api_for(spec: ModelSpec) -> BatchAPI:
    """The process-wide Batch API client of ``spec``."""
    api = _apis.get(spec)
    if api is None:
        key, base = credentials(spec)
        if spec.provider == "openai":
            from workers.batch.openai_batches import OpenAIBatches

            api = OpenAIBatches(spec, api_key=key, base_url=base)
        else:
            from workers.batch.anthropic_batches import AnthropicBatches

            api = AnthropicBatches(spec, api_key=key, base_url=base)
        _apis[spec] = api
    return api
