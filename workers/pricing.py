"""What a call costs: tokens times a model's prices, at the synchronous or the batch tier.

Amounts that cross processes (budget reservations, the job's cost counters) are integer
nano-dollars, so Redis adds them exactly with HINCRBY and no float sum drifts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workers.errors import ConfigError
from workers.models import DEFAULT_BATCH_DISCOUNT, ModelRegistry, ModelSpec

NANO_PER_USD = 1_000_000_000
# Tokens a chat request adds around the prompt (role markers, reply priming); OpenAI's
# cookbook counts 3 per message plus 3 for the reply, Anthropic's framing is similar.
MESSAGE_OVERHEAD_TOKENS = 16
# A structured verdict adds a JSON schema (OpenAI) or a tool definition plus Anthropic's
# tool-use system prompt (several hundred tokens per its docs): a generous bound.
STRUCTURED_OVERHEAD_TOKENS = 1024


@dataclass(frozen=True)
class Prices:
    """USD per million tokens at the synchronous tier, and the batch tier's factor."""

    input_per_mtok: float
    output_per_mtok: float
    batch_discount: float = DEFAULT_BATCH_DISCOUNT

    def cost(self, input_tokens: int, output_tokens: int, *, batch: bool) -> float:
        factor = self.batch_discount if batch else 1.0
        total = input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok
        return total * factor / 1_000_000


def prices_of(spec: ModelSpec) -> Prices | None:
    """``spec``'s prices, or None when either is unknown (never treated as free)."""
    if spec.input_price_per_mtok is None or spec.output_price_per_mtok is None:
        return None
    discount = DEFAULT_BATCH_DISCOUNT if spec.batch_discount is None else spec.batch_discount
    return Prices(spec.input_price_per_mtok, spec.output_price_per_mtok, discount)


def known_cost(registry: ModelRegistry, name: str) -> bool:
    """Whether the cost of model ``name`` is known (one that does not resolve has none)."""
    try:
        return prices_of(registry.resolve(name)) is not None
    except ConfigError:
        return False


def to_nano(usd: float) -> int:
    """Rounded up: a reservation or a cap is never smaller than what it stands for."""
    return math.ceil(usd * NANO_PER_USD - 1e-6)


def from_nano(nano: int | float) -> float:
    return nano / NANO_PER_USD


def cost_nano(spec: ModelSpec, input_tokens: int, output_tokens: int, *, batch: bool) -> int:
    """The cost of a reply's usage in nano-dollars; 0 for a model without a price."""
    prices = prices_of(spec)
    if prices is None:
        return 0
    return to_nano(prices.cost(input_tokens, output_tokens, batch=batch))


def max_input_tokens(spec: ModelSpec, prompt: str, *, structured: bool) -> int:
    """An upper bound on the input tokens of ``prompt``: the providers' tokenizers are
    byte-level BPEs, so no token is shorter than one byte of UTF-8."""
    extra = STRUCTURED_OVERHEAD_TOKENS if structured else 0
    return len(prompt.encode()) + MESSAGE_OVERHEAD_TOKENS + extra


def worst_case_nano(spec: ModelSpec, prompt: str, *, structured: bool, batch: bool) -> int:
    """The most one item with ``prompt`` can cost: every byte a token, ``max_tokens`` out.

    A reasoning model's synchronous item may take two calls, both billed: the first, left
    empty by hidden reasoning, and its retry with ``retry_max_tokens`` (workers/judge.ask).
    A batch request is never retried.
    """
    tokens_in = max_input_tokens(spec, prompt, structured=structured)
    if spec.reasons and not batch:
        return cost_nano(spec, 2 * tokens_in, spec.max_tokens + spec.retry_max_tokens, batch=batch)
    return cost_nano(spec, tokens_in, spec.max_tokens, batch=batch)
