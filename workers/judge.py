"""One judgement: prompt → provider call → verdict → result record."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from workers.errors import ProviderError
from workers.models import ModelSpec
from workers.parsing import Unparseable, Verdict, parse_reply, parse_structured
from workers.pricing import cost_nano
from workers.prompt import render
from workers.providers import Completion, client_for
from workers.records import (
    ScoreRequest,
    error_record,
    ok_record,
    sampled_record,
    unparseable_record,
)
from workers.settings import get_settings

# The error kind of a reply that hidden reasoning left empty even after its retry.
REASONING_BUDGET = "reasoning_budget"


def unjudgeable(request: ScoreRequest, spec: ModelSpec) -> dict[str, Any] | None:
    """The error record of an item not worth a provider call (empty text, longer than the
    model's ``max_input_chars``), or None."""
    for field in ("instruction", "generation"):
        if not getattr(request, field).strip():
            return error_record(request, f"input: empty {field}", kind="input")
    size = len(request.instruction) + len(request.generation)
    if size > spec.max_input_chars:
        return error_record(
            request,
            f"input: {size} characters exceed max_input_chars={spec.max_input_chars} "
            f"of model '{spec.name}'",
            kind="input",
        )
    return None


def prompt_of(request: ScoreRequest) -> str:
    return render(request.instruction, request.generation, get_settings().prompt_file)


def judge(
    request: ScoreRequest,
    spec: ModelSpec,
    *,
    kept: Sequence[Completion] = (),
    on_sample: Callable[[Completion], None] | None = None,
    before_sample: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The record for ``request``; raises ProviderError for the caller's retry policy.

    A record of a call made carries ``_tokens`` (its usage) and ``_cost`` (nano-dollars at
    the synchronous price); an item not worth a call carries neither.

    With ``request.samples`` N > 1 the judge is asked N times, one call after the other
    (``spec`` already at its sampling temperature, workers/sampling.py): ``kept`` are the
    replies earlier attempts got, so only the missing ones are asked; ``on_sample`` gets
    each new reply as it arrives (to keep it), and ``before_sample`` runs before every new
    call but this attempt's first (whose rate-limit capacity the caller already took).
    """
    refused = unjudgeable(request, spec)
    if refused is not None:
        return refused
    prompt = prompt_of(request)
    if request.samples <= 1:
        return verdict_record(request, spec, ask_once(spec, prompt), batch=False)
    completions = list(kept)
    asked = 0
    while len(completions) < request.samples:
        if asked and before_sample is not None:
            before_sample()
        completion = ask_once(spec, prompt)
        asked += 1
        if on_sample is not None:
            on_sample(completion)
        completions.append(completion)
    return samples_record(request, spec, completions)


def ask_once(spec: ModelSpec, prompt: str) -> Completion:
    """``ask``; a server that refuses structured output is asked again in text mode when
    the model says so."""
    try:
        return ask(spec, prompt)
    except ProviderError as exc:
        # Compatible servers vary: one that refuses a JSON schema / forced tool call is asked
        # again in text mode when the model says so, instead of failing every item.
        if not (spec.structured and exc.status == 400 and spec.structured_fallback == "text"):
            raise
        return ask(replace(spec, structured=False), prompt)


def samples_record(
    request: ScoreRequest, spec: ModelSpec, completions: Sequence[Completion]
) -> dict[str, Any]:
    """The record of N replies: their median (records.sampled_record), with the usage and
    cost of all N, and every reply for the result cache. A sample that hidden reasoning left
    empty is an unusable one; all of them so is a ``reasoning_budget`` error."""
    if spec.reasons and all(c.reasoned_away for c in completions):
        # Not cached, as one such reply is not: read again, it would look unparseable.
        record = reasoning_budget_record(request, spec, completions[-1], batch=False)
    else:
        record = sampled_record(request, [sample_verdict(spec, c) for c in completions])
        record["_reply"] = {"samples": [reply_entry(c) for c in completions]}
    # The summary's provider calls: this item's first call is counted as any item's is.
    record["_extra_calls"] = len(completions) - 1
    record["_tokens"] = [
        sum(c.input_tokens for c in completions),
        sum(c.output_tokens for c in completions),
    ]
    record["_cost"] = sum(
        cost_nano(spec, c.input_tokens, c.output_tokens, batch=False) for c in completions
    )
    return record


def sample_verdict(spec: ModelSpec, completion: Completion) -> Verdict | Unparseable:
    if spec.reasons and completion.reasoned_away:
        return Unparseable(raw="", why=f"{REASONING_BUDGET}: empty after hidden reasoning")
    if completion.structured is not None:
        return parse_structured(completion.structured)
    return parse_reply(completion.text)


def ask(spec: ModelSpec, prompt: str) -> Completion:
    """One call; a reasoning model's reply left empty because hidden reasoning used the whole
    budget is asked once more with ``spec.retry_max_tokens``. The returned usage counts both
    calls: the empty one was billed too."""
    client = client_for(spec)
    completion = client.complete(prompt)
    if not (spec.reasons and completion.reasoned_away):
        return completion
    return client.complete(prompt, max_tokens=spec.retry_max_tokens).after(completion)


def verdict_record(
    request: ScoreRequest, spec: ModelSpec, completion: Completion, *, batch: bool
) -> dict[str, Any]:
    """The record of a judge's reply (synchronous or from a batch), with its usage and cost.

    A reasoning model's reply still empty after the retry (``ask``; a batch request has
    none) is an error of its own kind, ``reasoning_budget``: not an unparseable reply.
    """
    record = _record_of(request, spec, completion, batch=batch)
    tokens = [completion.input_tokens, completion.output_tokens]
    record["_tokens"] = tokens
    record["_cost"] = cost_nano(spec, tokens[0], tokens[1], batch=batch)
    return record


def _record_of(
    request: ScoreRequest, spec: ModelSpec, completion: Completion, *, batch: bool
) -> dict[str, Any]:
    if spec.reasons and completion.reasoned_away:
        return reasoning_budget_record(request, spec, completion, batch=batch)
    if completion.structured is not None:
        verdict = parse_structured(completion.structured)
    else:
        verdict = parse_reply(completion.text)
    record = (
        unparseable_record(request, verdict)
        if isinstance(verdict, Unparseable)
        else ok_record(request, verdict)
    )
    # The reply as received, for the result cache, which parses it again on every read.
    record["_reply"] = reply_entry(completion)
    return record


def reply_entry(completion: Completion) -> dict[str, Any]:
    """A paid reply as the result cache keeps it (parsed on read: workers/cache.py)."""
    if completion.structured is None:
        return {"reply": completion.text, "structured": False}
    raw = json.dumps(completion.structured, ensure_ascii=False, default=str)
    return {"reply": raw, "structured": True}


def reasoning_budget_record(
    request: ScoreRequest, spec: ModelSpec, completion: Completion, *, batch: bool
) -> dict[str, Any]:
    """The error record of a reply that hidden reasoning left empty: says what was tried
    and which models-file field gives it room."""
    if batch:
        tried = f"a batch request with max_tokens={spec.max_tokens} (batches are not retried)"
        fix = "max_tokens"
    else:
        tried = f"max_tokens={spec.max_tokens}, then {spec.retry_max_tokens} on retry"
        fix = "reasoning_retry_max_tokens"
    lower = "reasoning_effort" if spec.provider == "openai" else "thinking_budget"
    return error_record(
        request,
        f"{REASONING_BUDGET}: no verdict: the model spent its whole completion budget on "
        f"hidden reasoning ({tried}; {completion.reasoning_tokens} reasoning tokens billed); "
        f"raise {fix} or lower {lower} in the models file",
        kind=REASONING_BUDGET,
    )
