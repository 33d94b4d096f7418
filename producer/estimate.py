"""``ibt score --dry-run``: what a job would send and cost, with nothing enqueued or called.

Per model: the requests that would be paid (unique pairs, less the verdicts already in the
result cache), their input tokens (producer/tokens.py), the expected and the largest output,
and the cost at synchronous and batch prices. A model without a price says so; it is never
shown as $0.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from producer.inputs import Pair
from producer.tokens import counter_for
from workers.cache import CACHE_PREFIX, cache_key
from workers.models import ModelSpec
from workers.pricing import Prices, prices_of
from workers.prompt import render
from workers.providers import base_url
from workers.settings import get_settings
from workers.verdict_schema import VERDICT_SCHEMA

# The rubric asks for brief reasoning, then the score: a planning figure of 150 tokens per
# reply (an assumption, stated as such in the output; the run's summary shows the real
# count), capped by the model's max_tokens, which is also shown as the most a reply costs.
EXPECTED_OUTPUT_TOKENS = 150
# Chat framing around one user message: 3 tokens per message and 3 to prime the reply
# (OpenAI's cookbook, "How to count tokens with tiktoken").
CHAT_FRAMING_TOKENS = 7
# Anthropic adds a tool-use system prompt to a forced tool call (a few hundred tokens per
# its docs, "Pricing" of tool use); a stated estimate, like every Anthropic count here.
ANTHROPIC_TOOL_PROMPT_TOKENS = 350
CACHE_READ_BATCH = 1000


@dataclass(frozen=True)
class ModelEstimate:
    """One model's share of the job: counts, tokens and cost (None: no price)."""

    model: str
    simulated: bool
    batch: bool
    rows: int
    unique: int
    cached: int
    token_method: str
    input_tokens: int
    output_tokens: int
    max_output_tokens: int
    prices: Prices | None

    @property
    def requests(self) -> int:
        return self.unique - self.cached

    def cost(self, *, batch: bool, worst: bool = False) -> float | None:
        if self.prices is None:
            return None
        output = self.max_output_tokens if worst else self.output_tokens
        return self.prices.cost(self.input_tokens, output, batch=batch)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "simulated": self.simulated,
            "batch": self.batch,
            "rows": self.rows,
            "unique_pairs": self.unique,
            "cached": self.cached,
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "token_method": self.token_method,
            "output_tokens_expected": self.output_tokens,
            "output_tokens_max": self.max_output_tokens,
            "cost_usd": self.cost(batch=False),
            "cost_usd_batch": self.cost(batch=True),
            "cost_usd_max": self.cost(batch=self.batch, worst=True),
        }


def estimate(
    pairs: Sequence[Pair],
    specs: Sequence[ModelSpec],
    *,
    client: Any = None,
    use_cache: bool = True,
    structured: bool | None = None,
    batch: bool = False,
) -> list[ModelEstimate]:
    """The estimate of every model; ``client`` is the Redis whose result cache is consulted
    (None: no cache to consult)."""
    unique: dict[tuple[str, str], None] = dict.fromkeys(pair.texts for pair in pairs)
    template = get_settings().prompt_file
    prompts = [render(instruction, generation, template) for instruction, generation in unique]
    results = []
    for spec in specs:
        if structured is not None:
            spec = replace(spec, structured=structured)
        if use_cache and client is not None:
            hit = _cached(client, spec, unique)
        else:
            hit = [False] * len(prompts)
        counter = counter_for(spec.model, openai=spec.provider == "openai")
        per_request = CHAT_FRAMING_TOKENS + _structured_overhead(spec, counter.count)
        to_pay = [prompt for prompt, cached in zip(prompts, hit, strict=True) if not cached]
        paid = len(to_pay)
        hits = len(prompts) - paid
        input_tokens = sum(counter.count(prompt) + per_request for prompt in to_pay)
        expected_out = min(EXPECTED_OUTPUT_TOKENS, spec.max_tokens)
        results.append(
            ModelEstimate(
                model=spec.name,
                simulated=spec.simulated,
                batch=batch or spec.batch,
                rows=len(pairs),
                unique=len(unique),
                cached=hits,
                token_method=counter.method,
                input_tokens=input_tokens,
                output_tokens=expected_out * paid,
                max_output_tokens=spec.max_tokens * paid,
                prices=prices_of(spec),
            )
        )
    return results


def _structured_overhead(spec: ModelSpec, count: Any) -> int:
    if not spec.structured:
        return 0
    schema = count(json.dumps(VERDICT_SCHEMA))
    return schema + (ANTHROPIC_TOOL_PROMPT_TOKENS if spec.provider == "anthropic" else 0)


def _cached(client: Any, spec: ModelSpec, unique: dict[tuple[str, str], None]) -> list[bool]:
    """Whether each unique pair already has a verdict of ``spec`` in the result cache."""
    endpoint = None if spec.simulated else base_url(spec)
    template = get_settings().prompt_file
    keys = [
        CACHE_PREFIX + cache_key(spec, endpoint, instruction, generation, template)
        for instruction, generation in unique
    ]
    hits: list[bool] = []
    for start in range(0, len(keys), CACHE_READ_BATCH):
        with client.pipeline(transaction=False) as pipe:
            for key in keys[start : start + CACHE_READ_BATCH]:
                pipe.exists(key)
            hits += [bool(found) for found in pipe.execute()]
    return hits
