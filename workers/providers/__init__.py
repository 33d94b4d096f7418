"""One small interface over the provider SDKs; each module speaks one wire protocol.

A worker process keeps one SDK client per model and reuses it from every thread (the SDK
clients are thread-safe), so connections are pooled across tasks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from workers.errors import ProviderError
from workers.models import SIMULATED_KEY, ModelSpec
from workers.settings import get_settings

if TYPE_CHECKING:  # the SDKs' HTTP library, imported with them when a client is built
    import httpx2


@dataclass(frozen=True)
class Completion:
    """What a judge said: free text, or the object of a structured reply, plus token usage.

    ``output_tokens`` is what the provider bills as output, hidden reasoning included
    (``reasoning_tokens`` of them); ``truncated`` means the reply stopped at its token budget.
    """

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    structured: dict[str, Any] | None = None
    truncated: bool = False
    reasoning_tokens: int = 0

    @property
    def reasoned_away(self) -> bool:
        """The whole budget went on hidden reasoning: cut off before any visible answer."""
        return self.truncated and not self.text.strip() and self.structured is None

    def after(self, earlier: Completion) -> Completion:
        """This reply with the usage of an ``earlier`` call for the same item added: both
        were billed."""
        return replace(
            self,
            input_tokens=earlier.input_tokens + self.input_tokens,
            output_tokens=earlier.output_tokens + self.output_tokens,
            reasoning_tokens=earlier.reasoning_tokens + self.reasoning_tokens,
        )


class JudgeClient(Protocol):
    def complete(self, prompt: str, *, max_tokens: int | None = None) -> Completion:
        """Send one prompt (with ``max_tokens`` instead of the spec's, if given); raise
        ProviderError (classified) on any failure."""
        ...


DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
_clients: dict[ModelSpec, JudgeClient] = {}
_lock = threading.Lock()


def pool_limits(spec: ModelSpec) -> httpx2.Limits:
    """Keep a connection alive per worker thread, so calls reuse them instead of reconnecting."""
    import httpx2

    return httpx2.Limits(
        max_connections=spec.concurrency * 2, max_keepalive_connections=spec.concurrency
    )


# Sent as the key to a server of the user's own that needs none (Ollama, vLLM without
# auth): the SDKs refuse to build a client without some key.
NO_KEY = "no-key-needed"


def base_url(spec: ModelSpec) -> str:
    """Where ``spec``'s requests go: the models file, the SDK's variable, or the default."""
    return (
        spec.base_url or get_settings().env(spec.base_url_env) or DEFAULT_BASE_URLS[spec.provider]
    )


def needs_key(spec: ModelSpec) -> bool:
    """A provider's own endpoint needs a key; a server of the user's own may not."""
    return not spec.simulated and base_url(spec).rstrip("/") == DEFAULT_BASE_URLS[spec.provider]


def credentials(spec: ModelSpec) -> tuple[str, str | None]:
    """(api key, base URL) for ``spec`` from this process's environment.

    Raises a permanent ProviderError when the key is missing for a provider's own endpoint:
    the worker's operator must set it; retrying cannot help. A model pointed at another
    server (``base_url``, ``OPENAI_BASE_URL``...) may run without one.
    """
    settings = get_settings()
    if spec.simulated:
        if not settings.simulator_url:
            raise ProviderError(
                f"model '{spec.name}' is simulated but IBT_SIMULATOR_URL is not set on the worker",
                kind="config",
                retryable=False,
            )
        base = settings.simulator_url.rstrip("/")
        return SIMULATED_KEY, base + "/v1" if spec.provider == "openai" else base
    key = settings.secret(spec.key_env)
    if not key:
        if needs_key(spec):
            raise ProviderError(
                f"{spec.key_env} is not set in the worker's environment",
                kind="auth",
                retryable=False,
            )
        key = NO_KEY
    # Always explicit: an empty OPENAI_BASE_URL (as compose passes an unset one) would
    # otherwise reach the SDK as "" and break every request.
    return key, base_url(spec)


def client_for(spec: ModelSpec) -> JudgeClient:
    """The process-wide client of ``spec``, created on first use."""
    client = _clients.get(spec)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(spec)
        if client is None:
            api_key, base_url = credentials(spec)
            if spec.provider == "openai":
                from workers.providers.openai import OpenAIJudge

                client = OpenAIJudge(spec, api_key=api_key, base_url=base_url)
            else:
                from workers.providers.anthropic import AnthropicJudge

                client = AnthropicJudge(spec, api_key=api_key, base_url=base_url)
            _clients[spec] = client
    return client
