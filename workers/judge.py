"""One judgement: prompt → provider call → verdict → result record."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from workers.errors import ProviderError
from workers.models import ModelSpec
from workers.parsing import Unparseable, parse_reply, parse_structured
from workers.pricing import cost_nano
from workers.prompt import render
from workers.providers import Completion, client_for
from workers.records import ScoreRequest, error_record, ok_record, unparseable_record
from workers.settings import get_settings


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


def judge(request: ScoreRequest, spec: ModelSpec) -> dict[str, Any]:
    """The record for ``request``; raises ProviderError for the caller's retry policy.

    A record of a call made carries ``_tokens`` (its usage) and ``_cost`` (nano-dollars at
    the synchronous price); an item not worth a call carries neither.
    """
    refused = unjudgeable(request, spec)
    if refused is not None:
        return refused
    prompt = prompt_of(request)
    try:
        completion = client_for(spec).complete(prompt)
    except ProviderError as exc:
        # Compatible servers vary: one that refuses a JSON schema / forced tool call is asked
        # again in text mode when the model says so, instead of failing every item.
        if not (spec.structured and exc.status == 400 and spec.structured_fallback == "text"):
            raise
        completion = client_for(replace(spec, structured=False)).complete(prompt)
    return verdict_record(request, spec, completion, batch=False)


def verdict_record(
    request: ScoreRequest, spec: ModelSpec, completion: Completion, *, batch: bool
) -> dict[str, Any]:
    """The record of a judge's reply (synchronous or from a batch), with its usage and cost."""
    if completion.structured is not None:
        verdict = parse_structured(completion.structured)
    else:
        verdict = parse_reply(completion.text)
    if isinstance(verdict, Unparseable):
        record = unparseable_record(request, verdict)
    else:
        record = ok_record(request, verdict)
    tokens = [completion.input_tokens, completion.output_tokens]
    record["_tokens"] = tokens
    record["_cost"] = cost_nano(spec, tokens[0], tokens[1], batch=batch)
    return record
