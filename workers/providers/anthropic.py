"""Anthropic Messages protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import anthropic
from anthropic.types import Message

from workers.models import ModelSpec
from workers.providers import Completion, pool_limits
from workers.providers.classify import connection_error, from_status, timeout_error
from workers.verdict_schema import VERDICT_SCHEMA, VERDICT_TOOL

T = TypeVar("T")


class AnthropicJudge:
    """Calls ``messages.create``; SDK retries are off because retrying is ours."""

    def __init__(self, spec: ModelSpec, *, api_key: str, base_url: str | None) -> None:
        self.spec = spec
        self.client = anthropic.Anthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=spec.timeout,
            http_client=anthropic.DefaultHttpxClient(limits=pool_limits(spec)),
        )

    def complete(self, prompt: str, *, max_tokens: int | None = None) -> Completion:
        spec = self.spec if max_tokens is None else replace(self.spec, max_tokens=max_tokens)
        kwargs = request_params(spec, prompt)
        temperature = kwargs.pop("temperature", None)
        if temperature is not None:
            # Not a named argument of this SDK version; the API still accepts it.
            kwargs["extra_body"] = {"temperature": temperature}
        message = call(lambda: self.client.messages.create(**kwargs))
        return completion_of(message)


def call(operation: Callable[[], T]) -> T:
    """One SDK call, its failure classified once for every caller (calls and batches)."""
    try:
        return operation()
    except anthropic.APITimeoutError as exc:
        raise timeout_error(str(exc)) from None
    except anthropic.APIConnectionError as exc:
        raise connection_error(str(exc)) from None
    except anthropic.APIStatusError as exc:
        raise from_status(exc.status_code, exc.message, exc.response.headers) from None


def request_params(spec: ModelSpec, prompt: str) -> dict[str, Any]:
    """The Messages parameters for ``prompt``: sent as is, or as a message batch request's.

    With extended thinking (``thinking_budget``) Anthropic refuses a temperature and a forced
    tool call, so neither is sent: a structured verdict is then offered as a tool the model
    may call (``auto``), and a text verdict is read if it answers in text instead.
    """
    params: dict[str, Any] = {
        "model": spec.model,
        "max_tokens": spec.max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }
    thinking = spec.thinking_budget is not None
    if thinking:
        params["thinking"] = {"type": "enabled", "budget_tokens": spec.thinking_budget}
    elif spec.temperature is not None:
        params["temperature"] = spec.temperature
    if spec.structured:
        # A forced tool call is Anthropic's way to get an object that follows a schema.
        params["tools"] = [
            {
                "name": VERDICT_TOOL,
                "description": "Record the verdict: brief reasoning, then a score 1-5.",
                "input_schema": VERDICT_SCHEMA,
            }
        ]
        params["tool_choice"] = (
            {"type": "auto"} if thinking else {"type": "tool", "name": VERDICT_TOOL}
        )
    return params


def completion_of(message: Message) -> Completion:
    """What the judge said in a message (a reply, or a batch result's).

    Only text and tool-use blocks are the answer: a thinking block holds drafts (maybe a
    different "Score:") that are not the verdict. Thinking is billed inside output_tokens.
    """
    text_parts: list[str] = []
    structured: dict[str, Any] | None = None
    for block in message.content:
        if block.type == "text":
            text_parts.append(block.text)
        elif block.type == "tool_use" and isinstance(block.input, dict):
            structured = dict(block.input)
    usage = message.usage
    details = usage.output_tokens_details if usage else None
    return Completion(
        text="".join(text_parts),
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        structured=structured,
        truncated=message.stop_reason == "max_tokens",
        reasoning_tokens=details.thinking_tokens if details else 0,
    )
