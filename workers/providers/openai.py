"""OpenAI Chat Completions protocol: OpenAI itself and any compatible server (vLLM, Ollama...)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import openai
from openai.types.chat import ChatCompletion

from workers.models import ModelSpec
from workers.providers import Completion, pool_limits
from workers.providers.classify import connection_error, from_status, timeout_error
from workers.verdict_schema import VERDICT_SCHEMA

T = TypeVar("T")
# What ``chat.completions.create`` posts to, relative to the client's base URL.
CHAT_PATH = "/chat/completions"


class OpenAIJudge:
    """Sends Chat Completions through the SDK; SDK retries are off because retrying is ours.

    Through ``client.post`` (the SDK's documented way to send a request body as is) rather
    than ``chat.completions.create``, which first walks the parameters' TypedDict
    annotations to transform them: 8.6% of an OpenAI worker's CPU in a py-spy profile at
    200 ms latency (bench/README.md), for a body (``request_body``) that is plain JSON
    already. The response is parsed into the same ``ChatCompletion`` and errors are the SDK's.
    """

    def __init__(self, spec: ModelSpec, *, api_key: str, base_url: str | None) -> None:
        self.spec = spec
        self.client = openai.OpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=spec.timeout,
            http_client=openai.DefaultHttpxClient(limits=pool_limits(spec)),
        )

    def complete(self, prompt: str, *, max_tokens: int | None = None) -> Completion:
        spec = self.spec if max_tokens is None else replace(self.spec, max_tokens=max_tokens)
        body = request_body(spec, prompt)
        response = call(lambda: self.client.post(CHAT_PATH, body=body, cast_to=ChatCompletion))
        return completion_of(self.spec, response)


def call(operation: Callable[[], T]) -> T:
    """One SDK call, its failure classified once for every caller (calls and batches)."""
    try:
        return operation()
    except openai.APITimeoutError as exc:
        raise timeout_error(str(exc)) from None
    except openai.APIConnectionError as exc:
        raise connection_error(str(exc)) from None
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        code = body.get("code") if isinstance(body.get("code"), str) else None
        raise from_status(exc.status_code, exc.message, exc.response.headers, code) from None


def request_body(spec: ModelSpec, prompt: str) -> dict[str, Any]:
    """The Chat Completions body for ``prompt``: sent as is, or as a Batch API line's body.

    Only what the model's family accepts: reasoning models (``ModelSpec.reasons``) refuse
    ``max_tokens`` and ``temperature`` with HTTP 400, and take ``max_completion_tokens`` and
    ``reasoning_effort``; compatible servers may not know the new names.
    """
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": [{"role": "user", "content": prompt}],
    }
    if spec.reasons:
        body["max_completion_tokens"] = spec.max_tokens
        if spec.reasoning_effort is not None:
            body["reasoning_effort"] = spec.reasoning_effort
    else:
        body["max_tokens"] = spec.max_tokens
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
    if spec.structured:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "verdict", "strict": True, "schema": VERDICT_SCHEMA},
        }
    return body


def completion_of(spec: ModelSpec, response: ChatCompletion) -> Completion:
    """What the judge said in a chat completion (a reply, or a batch line's body)."""
    choice = response.choices[0] if response.choices else None
    text = (choice.message.content or "") if choice else ""
    usage = response.usage
    details = usage.completion_tokens_details if usage else None
    structured = None
    if spec.structured:
        try:
            loaded = json.loads(text)
            structured = loaded if isinstance(loaded, dict) else None
        except ValueError:
            structured = None
    return Completion(
        text=text,
        input_tokens=usage.prompt_tokens if usage else 0,
        # Reasoning tokens are billed as output and already inside completion_tokens.
        output_tokens=usage.completion_tokens if usage else 0,
        structured=structured,
        truncated=choice is not None and choice.finish_reason == "length",
        reasoning_tokens=(details.reasoning_tokens or 0) if details else 0,
    )
