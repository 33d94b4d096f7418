"""OpenAI Chat Completions protocol: OpenAI itself and any compatible server (vLLM, Ollama...)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import openai
from openai.types.chat import ChatCompletion

from workers.models import ModelSpec
from workers.providers import Completion, pool_limits
from workers.providers.classify import connection_error, from_status, timeout_error
from workers.verdict_schema import VERDICT_SCHEMA

REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
T = TypeVar("T")


class OpenAIJudge:
    """Calls ``chat.completions.create``; SDK retries are off because retrying is ours."""

    def __init__(self, spec: ModelSpec, *, api_key: str, base_url: str | None) -> None:
        self.spec = spec
        self.client = openai.OpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=spec.timeout,
            http_client=openai.DefaultHttpxClient(limits=pool_limits(spec)),
        )

    def complete(self, prompt: str) -> Completion:
        body = request_body(self.spec, prompt)
        response = call(lambda: self.client.chat.completions.create(**body))
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
    """The Chat Completions body for ``prompt``: sent as is, or as a Batch API line's body."""
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": [{"role": "user", "content": prompt}],
    }
    # OpenAI's reasoning models refuse max_tokens; compatible servers may not know the new name.
    if spec.model.startswith(REASONING_PREFIXES):
        body["max_completion_tokens"] = spec.max_tokens
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
    text = (response.choices[0].message.content or "") if response.choices else ""
    usage = response.usage
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
        output_tokens=usage.completion_tokens if usage else 0,
        structured=structured,
    )
