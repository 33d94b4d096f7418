"""A local fake LLM provider speaking the OpenAI and Anthropic wire formats.

It judges deterministically (the score is a hash of model and pair), after a configurable
latency, with optional faults, so the demo, the tests and the benchmarks run the very SDK
code path production uses. Everything it answers is labelled as simulated. The providers'
batch APIs (OpenAI Files + Batches, Anthropic Message Batches) live in simulator_batch.py and
judge each line with the same code as the sync endpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import math
import random
import re
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from producer.simulator_batch import BatchApi

_PAIR = re.compile(r"<instruction>\n?(.*?)\n?</instruction>.*<answer>\n?(.*?)\n?</answer>", re.S)
_DIRECTIVE = re.compile(r"<<sim:([^>]*)>>")
ERROR_TYPES = {
    "openai": {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        409: "invalid_request_error",
        429: "rate_limit_error",
        500: "server_error",
        503: "server_error",
        529: "server_error",
    },
    "anthropic": {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        503: "api_error",
        529: "overloaded_error",
    },
}


# Model ids served as OpenAI serves its reasoning models: temperature and max_tokens are
# refused with HTTP 400, and hidden reasoning tokens (by reasoning_effort, or the pair's
# ``<<sim:reasoning=N>>``) are spent out of max_completion_tokens before the visible reply;
# a budget they exhaust leaves the reply empty with finish_reason "length", billed all the same.
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
REASONING_TOKENS = {"low": 256, "medium": 1024, "high": 3072}
REASONING_EFFORTS = ("minimal", *REASONING_TOKENS)
# Anthropic extended thinking: tokens of thinking written (at most budget_tokens, or the
# pair's ``<<sim:thinking=N>>``) before the text, billed as output.
THINKING_TOKENS = 1200
MIN_THINKING_BUDGET = 1024
# Request fields the log keeps, so tests see what each model family was sent.
LOGGED_PARAMS = (
    "temperature",
    "max_tokens",
    "max_completion_tokens",
    "reasoning_effort",
    "thinking",
    "tool_choice",
)


def is_reasoning_model(model: str) -> bool:
    return model.startswith(REASONING_PREFIXES)


def simulated_score(model: str, instruction: str, generation: str) -> int:
    """The score the simulated judge gives: a stable hash, so tests can predict it."""
    digest = hashlib.sha256(f"{model}\n{instruction}\n{generation}".encode()).hexdigest()
    return 1 + int(digest, 16) % 5


def sampled_score(model: str, instruction: str, generation: str, draw: int) -> int:
    """The score of draw ``draw`` (0, 1, ...) of a request sent with a temperature above 0:
    ``simulated_score`` moved by -1, 0 or +1 (a stable hash of the pair and the draw),
    kept within 1..5. Temperature 0 or none answers ``simulated_score`` every time."""
    base = simulated_score(model, instruction, generation)
    digest = hashlib.sha256(f"{model}\n{instruction}\n{generation}\n{draw}".encode()).hexdigest()
    return min(5, max(1, base + (-1, 0, 1)[int(digest, 16) % 3]))


@dataclass
class Knobs:
    latency: float = 0.0
    jitter: float = 0.0
    seed: int = 0
    fault_429: float = 0.0
    fault_500: float = 0.0
    fault_529: float = 0.0
    fault_hang: float = 0.0
    fault_malformed: float = 0.0
    retry_after: float = 1.0
    rpm: int = 0
    api_key: str | None = None
    structured: bool = True
    # Batch APIs (producer/simulator_batch.py): line i of n completes batch_latency*(i+1)/n
    # seconds after creation; batch_fault is a fraction of lines failing with a transient 500.
    # A batch takes batch_latency and batch_expire_after when created, the delay when cancelled.
    batch_latency: float = 0.0
    batch_fault: float = 0.0
    batch_cancel_delay: float = 0.2
    batch_expire_after: float | None = None  # fraction of lines run before a batch expires
    batch_fail_validation: str | None = None  # error code for the next OpenAI batch, once
    batch_token_limit: int = 0  # OpenAI enqueued tokens per model; 0 = unlimited
    # Crash tests: seconds a request is held at its riskiest moment (see simulator_batch).
    hold_file_create: float = 0.0
    hold_batch_create: float = 0.0
    hold_results: float = 0.0


HOLDS = ("file_create", "batch_create", "results")


@dataclass
class State:
    knobs: Knobs
    log: list[dict[str, Any]] = field(default_factory=list)
    by_status: collections.Counter[int] = field(default_factory=collections.Counter)
    attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    windows: dict[str, collections.deque[float]] = field(default_factory=dict)
    batch_log: list[dict[str, Any]] = field(default_factory=list)
    paid: collections.Counter[str] = field(default_factory=collections.Counter)
    paid_keys: collections.Counter[str] = field(default_factory=collections.Counter)
    # Requests in progress, so not cleared by reset (their own finally clauses count them down).
    holding: collections.Counter[str] = field(default_factory=collections.Counter)

    def reset(self) -> None:
        self.log.clear()
        self.by_status.clear()
        self.attempts.clear()
        self.windows.clear()
        self.batch_log.clear()
        self.paid.clear()
        self.paid_keys.clear()

    def pay(self, kind: str, key: str) -> None:
        """Count a successful (billed) answer, sync or batch, and its pair for duplicates."""
        self.paid[kind] += 1
        self.paid_keys[key] += 1


def _text_of(messages: Any) -> str:
    parts: list[str] = []
    for message in messages or []:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(parts)


def _directives(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _DIRECTIVE.finditer(text):
        for item in match.group(1).split(","):
            key, _, value = item.strip().partition("=")
            if key:
                found[key] = value
    return found


def error_body(protocol: str, status: int, message: str) -> dict[str, Any]:
    """The error envelope each provider sends with an HTTP error status."""
    kind = ERROR_TYPES[protocol].get(status, "api_error")
    if protocol == "openai":
        return {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return {"type": "error", "error": {"type": kind, "message": message}}


def _error(protocol: str, status: int, message: str, headers: dict[str, str]) -> web.Response:
    return _respond(protocol, Verdict(status, error_body(protocol, status, message), headers))


def _respond(protocol: str, verdict: Verdict) -> web.Response:
    headers = verdict.headers
    if protocol == "anthropic" and verdict.status != 200:
        headers = {**headers, "request-id": f"req_{uuid.uuid4().hex[:16]}"}
    return web.json_response(verdict.body, status=verdict.status, headers=headers)


@dataclass
class Verdict:
    """An answer to one judge request: the status and body the sync endpoint sends."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    latency: float = 0.0
    # The score a judge reply gave (logged, so tests see what each sample said).
    score: int | str | None = None


@dataclass
class Call:
    """One judge request, read: the pair it names, its attempt number and its directives."""

    protocol: str
    body: dict[str, Any]
    model: str
    text: str
    instruction: str
    generation: str
    key: str
    attempt: int
    structured: bool
    directives: dict[str, str]
    rng: random.Random

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Verdict:
        return Verdict(status, error_body(self.protocol, status, message), headers or {})


class Simulator:
    def __init__(self, knobs: Knobs) -> None:
        self.state = State(knobs)
        self.batches = BatchApi(self)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.openai)
        app.router.add_post("/v1/messages", self.anthropic)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/_sim/stats", self.stats)
        app.router.add_post("/_sim/reset", self.reset)
        app.router.add_post("/_sim/config", self.config)
        self.batches.add_routes(app.router)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "simulated", "object": "model", "owned_by": "ibt"}]}
        )

    async def stats(self, request: web.Request) -> web.Response:
        """Counters for tests. ``requests``, ``by_status`` and ``log`` are the sync calls only."""
        state = self.state
        return web.json_response(
            {
                "requests": len(state.log),
                "by_status": {str(k): v for k, v in state.by_status.items()},
                "log": state.log,
                "batches": self.batches.summary(),
                "batch_lines": len(state.batch_log),
                "batch_log": state.batch_log,
                "paid": {"sync": state.paid["sync"], "batch": state.paid["batch"]},
                "duplicates": sum(1 for n in state.paid_keys.values() if n > 1),
                "holding": {kind: state.holding[kind] for kind in HOLDS},
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        self.batches.reset()
        return web.json_response({"ok": True})

    async def config(self, request: web.Request) -> web.Response:
        changes = await request.json()
        for key, value in changes.items():
            if not hasattr(self.state.knobs, key):
                return web.json_response({"error": f"unknown knob {key}"}, status=400)
            setattr(self.state.knobs, key, value)
        return web.json_response({"ok": True})

    async def openai(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "openai")

    async def anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "anthropic")

    @staticmethod
    def error_response(
        protocol: str, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        return _error(protocol, status, message, headers or {})

    @staticmethod
    def prompt_text(body: Any) -> str:
        """The user text of a chat body, as the judge reads it (for token estimates)."""
        return _text_of(body.get("messages") if isinstance(body, dict) else None)

    def authorized(self, request: web.Request, protocol: str) -> bool:
        """Whether the request carries the configured key (always, when none is configured)."""
        knobs = self.state.knobs
        if knobs.api_key is None:
            return True
        # Anthropic's API takes x-api-key; newer SDKs send a bearer token instead.
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if protocol == "anthropic" and "x-api-key" in request.headers:
            given = request.headers["x-api-key"]
        return given == knobs.api_key

    def parse(self, protocol: str, body: Any) -> Call:
        """Read one judge request and count it as an attempt at its pair."""
        body = body if isinstance(body, dict) else {}
        model = str(body.get("model", ""))
        text = _text_of(body.get("messages"))
        pair = _PAIR.search(text)
        instruction, generation = (pair.group(1), pair.group(2)) if pair else (text, "")
        key = hashlib.sha1(f"{model}\n{instruction}\n{generation}".encode()).hexdigest()
        attempt = self.state.attempts[key]
        self.state.attempts[key] += 1
        structured = (
            protocol == "openai"
            and isinstance(body.get("response_format"), dict)
            and body["response_format"].get("type") in ("json_schema", "json_object")
        ) or (
            protocol == "anthropic"
            and bool(body.get("tools"))
            and isinstance(body.get("tool_choice"), dict)
            and body["tool_choice"].get("type") == "tool"
        )
        directives = _directives(text)
        times = directives.get("times")
        if times is not None and attempt >= int(times or 0):
            directives = {k: v for k, v in directives.items() if k in ("score", "latency")}
        return Call(
            protocol=protocol,
            body=body,
            model=model,
            text=text,
            instruction=instruction,
            generation=generation,
            key=key,
            attempt=attempt,
            structured=structured,
            directives=directives,
            rng=random.Random(f"{self.state.knobs.seed}:{key}:{attempt}"),
        )

    def unsupported(self, call: Call) -> Verdict | None:
        """The 400 a provider without structured output gives to a structured request, or
        the one a request with parameters its model family refuses gets."""
        if call.structured and not self.state.knobs.structured:
            return call.error(400, "structured output is not supported (simulated)")
        return refused_params(call)

    def judge(self, call: Call, *, now: float, batch_fault: float = 0.0) -> Verdict:
        """The answer to one request: a directive or fault-knob error, or the judge's reply.

        Shared by the sync endpoints and the batch APIs, so a batch line gets exactly the body
        the sync endpoint would have sent. ``batch_fault`` adds batch-only transient 500s, drawn
        from their own generator so the sync fault sequence stays as it was.
        """
        knobs = self.state.knobs
        directives = call.directives
        status = int(directives["status"]) if "status" in directives else None
        if status is None:
            roll = call.rng.random()
            for code, rate in (
                (429, knobs.fault_429),
                (500, knobs.fault_500),
                (529, knobs.fault_529),
            ):
                if roll < rate:
                    status = code
                    break
                roll -= rate
        if status is None and batch_fault > 0:
            batch_rng = random.Random(f"{knobs.seed}:batch:{call.key}:{call.attempt}")
            if batch_rng.random() < batch_fault:
                status = 500
        latency = float(directives.get("latency", knobs.latency))
        if knobs.jitter:
            latency += call.rng.uniform(0, knobs.jitter)
        if status is not None:
            headers: dict[str, str] = {}
            retry_after = directives.get("retry_after")
            if retry_after is None and status == 429:
                retry_after = f"{knobs.retry_after:g}"
            if retry_after is not None:
                headers["Retry-After"] = retry_after
            return call.error(status, f"simulated error {status}", headers)

        model = call.model
        score: int | str = simulated_score(model, call.instruction, call.generation)
        temperature = call.body.get("temperature")
        sampled = isinstance(temperature, int | float) and temperature > 0
        if sampled:
            # Each attempt at a pair is a new draw: what --samples N sees of a real judge.
            score = sampled_score(model, call.instruction, call.generation, call.attempt)
        if "score" in directives:
            score = directives["score"]
        garble = "garble" in directives or call.rng.random() < knobs.fault_malformed
        reasoning = (
            f"Simulated judge {model}: a deterministic stand-in for a real review of this "
            "answer, not a real judgement."
        )
        if sampled:
            reasoning += f" (draw {call.attempt})"
        reply = (
            "I am not sure how to rate this answer." if garble else f"{reasoning}\nScore: {score}"
        )
        in_tokens = max(1, len(call.text) // 4)
        out_tokens = max(1, len(reply) // 4)
        if call.protocol == "openai":
            content = (
                json.dumps({"reasoning": reasoning, "score": score}) if call.structured else reply
            )
            hidden = hidden_reasoning(call)
            budget = call.body.get("max_completion_tokens")
            finish = "stop"
            if isinstance(budget, int) and hidden + out_tokens > budget:
                # Cut off at the budget: hidden reasoning first, then what is left of the text.
                finish, hidden = "length", min(hidden, budget)
                content = content[: (budget - hidden) * 4]
                out_tokens = budget - hidden
            usage: dict[str, Any] = {
                "prompt_tokens": in_tokens,
                "completion_tokens": hidden + out_tokens,
                "total_tokens": in_tokens + hidden + out_tokens,
            }
            if is_reasoning_model(model):
                usage["completion_tokens_details"] = {"reasoning_tokens": hidden}
            body: dict[str, Any] = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(now),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": finish,
                        "logprobs": None,
                    }
                ],
                "usage": usage,
            }
            return Verdict(
                200, body, {}, latency, None if garble and not call.structured else score
            )
        if call.structured:
            blocks: list[dict[str, Any]] = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": call.body["tool_choice"]["name"],
                    "input": {"reasoning": reasoning, "score": score},
                }
            ]
            stop_reason = "tool_use"
        else:
            blocks = [{"type": "text", "text": reply}]
            stop_reason = "end_turn"
        thinking = thinking_budget(call.body)
        usage = {"input_tokens": in_tokens, "output_tokens": out_tokens}
        if thinking is not None:
            blocks, stop_reason, usage = with_thinking(call, blocks, stop_reason, usage, score)
        body = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        return Verdict(200, body, {}, latency, None if garble and not call.structured else score)

    async def _serve(self, request: web.Request, protocol: str) -> web.StreamResponse:
        arrived = time.time()
        knobs = self.state.knobs
        call = self.parse(protocol, await request.json())
        model = call.model
        entry: dict[str, Any] = {
            "t": arrived,
            "protocol": protocol,
            "model": model,
            "key": call.key,
        }
        self.state.log.append(entry)

        def finish(status: int) -> None:
            entry["status"] = status
            self.state.by_status[status] += 1

        if not self.authorized(request, protocol):
            finish(401)
            return _error(protocol, 401, "invalid api key (simulated)", {})

        entry["structured"] = call.structured
        entry["params"] = {k: call.body[k] for k in LOGGED_PARAMS if k in call.body}
        refused = self.unsupported(call)
        if refused is not None:
            finish(refused.status)
            return _respond(protocol, refused)

        if knobs.rpm > 0:
            window = self.state.windows.setdefault(model, collections.deque())
            while window and window[0] <= arrived - 60:
                window.popleft()
            if len(window) >= knobs.rpm:
                wait = max(1, math.ceil(window[0] + 60 - arrived))
                finish(429)
                return _error(
                    protocol, 429, "rate limit exceeded (simulated)", {"Retry-After": str(wait)}
                )
            window.append(arrived)

        if "hang" in call.directives or call.rng.random() < knobs.fault_hang:
            finish(0)
            await asyncio.sleep(600)
            return web.Response(status=504)
        verdict = self.judge(call, now=arrived)
        if verdict.status != 200:
            finish(verdict.status)
            return _respond(protocol, verdict)
        if verdict.latency > 0:
            await asyncio.sleep(verdict.latency)
        finish(200)
        entry["in"], entry["out"] = usage_of(verdict.body)
        entry["reasoning"] = reasoning_of(verdict.body)
        entry["score"] = verdict.score
        self.state.pay("sync", call.key)
        return web.json_response(verdict.body)


def usage_of(body: dict[str, Any]) -> tuple[int, int]:
    """(input, output) tokens a reply bills, in either wire format."""
    used = body.get("usage") or {}
    return (
        int(used.get("prompt_tokens", used.get("input_tokens", 0))),
        int(used.get("completion_tokens", used.get("output_tokens", 0))),
    )


def reasoning_of(body: dict[str, Any]) -> int:
    """Hidden reasoning tokens a reply bills (inside its output tokens), in either format."""
    used = body.get("usage") or {}
    details = used.get("completion_tokens_details") or used.get("output_tokens_details") or {}
    return int(details.get("reasoning_tokens", details.get("thinking_tokens", 0)))


def refused_params(call: Call) -> Verdict | None:
    """The 400 each provider gives to parameters the model's family does not take."""
    body = call.body
    if call.protocol == "openai":
        effort = body.get("reasoning_effort")
        if not is_reasoning_model(call.model):
            if effort is not None:
                return _unsupported(call, "reasoning_effort")
            return None
        for name in ("temperature", "max_tokens"):
            if name in body:
                return _unsupported(call, name)
        if effort is not None and effort not in REASONING_EFFORTS:
            return call.error(400, f"Invalid value: '{effort}' for 'reasoning_effort'.")
        return None
    budget = thinking_budget(body)
    if budget is None:
        return None
    if budget < MIN_THINKING_BUDGET:
        return call.error(
            400,
            "thinking.enabled.budget_tokens: Input should be greater than or equal to "
            f"{MIN_THINKING_BUDGET}",
        )
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] <= budget:
        return call.error(400, "`max_tokens` must be greater than `thinking.budget_tokens`.")
    if body.get("temperature", 1) != 1:
        return call.error(400, "`temperature` may only be set to 1 when thinking is enabled.")
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("tool", "any"):
        return call.error(400, "Thinking may not be enabled when tool_choice forces tool use.")
    return None


def _unsupported(call: Call, name: str) -> Verdict:
    """OpenAI's answer to a parameter the model does not take."""
    hint = " Use 'max_completion_tokens' instead." if name == "max_tokens" else ""
    body = error_body(
        "openai", 400, f"Unsupported parameter: '{name}' is not supported with this model.{hint}"
    )
    body["error"].update(param=name, code="unsupported_parameter")
    return Verdict(400, body)


def hidden_reasoning(call: Call) -> int:
    """Reasoning tokens an OpenAI reasoning model spends before its reply (0 for others)."""
    if not is_reasoning_model(call.model):
        return 0
    if "reasoning" in call.directives:
        return int(call.directives["reasoning"])
    effort = call.body.get("reasoning_effort") or "medium"
    return REASONING_TOKENS.get(effort, 0)


def thinking_budget(body: dict[str, Any]) -> int | None:
    """budget_tokens of an Anthropic request with extended thinking enabled, else None."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    return budget if isinstance(budget, int) else 0


def with_thinking(
    call: Call,
    blocks: list[dict[str, Any]],
    stop_reason: str,
    usage: dict[str, Any],
    score: int | str,
) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    """An Anthropic reply with extended thinking: a thinking block first, holding a draft
    with a different score (only the text is the verdict), billed as output tokens; text
    that does not fit in max_tokens after it is cut, as Anthropic stops at max_tokens."""
    budget = thinking_budget(call.body) or 0
    used = min(int(call.directives.get("thinking", THINKING_TOKENS)), budget)
    draft = (score % 5) + 1 if isinstance(score, int) else 1
    thought = {
        "type": "thinking",
        "thinking": f"Simulated thinking. First impression of the answer, Score: {draft}. "
        "Let me reconsider before giving the verdict.",
        "signature": f"sim-{uuid.uuid4().hex[:16]}",
    }
    room = int(call.body.get("max_tokens", 0)) - used
    visible = usage["output_tokens"]
    if visible > room:
        stop_reason = "max_tokens"
        visible = max(0, room)
        blocks = [
            {**b, "text": b["text"][: visible * 4]}
            for b in blocks
            if b["type"] == "text" and visible
        ]
    usage = {
        **usage,
        "output_tokens": used + visible,
        "output_tokens_details": {"thinking_tokens": used},
    }
    return [thought, *blocks], stop_reason, usage


def parse_args(argv: list[str] | None) -> tuple[str, int, Knobs]:
    parser = argparse.ArgumentParser(prog="ibt simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    for name in ("429", "500", "529", "hang", "malformed"):
        parser.add_argument(f"--fault-{name}", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--rpm", type=int, default=0)
    parser.add_argument("--api-key")
    parser.add_argument("--no-structured", action="store_true")
    parser.add_argument("--batch-latency", type=float, default=0.0)
    parser.add_argument("--batch-fault", type=float, default=0.0)
    parser.add_argument("--batch-cancel-delay", type=float, default=0.2)
    parser.add_argument("--batch-expire-after", type=float, default=None)
    parser.add_argument("--batch-fail-validation", default=None)
    parser.add_argument("--batch-token-limit", type=int, default=0)
    for name in HOLDS:
        parser.add_argument(f"--hold-{name.replace('_', '-')}", type=float, default=0.0)
    args = parser.parse_args(argv)
    knobs = Knobs(
        latency=args.latency,
        jitter=args.jitter,
        seed=args.seed,
        fault_429=args.fault_429,
        fault_500=args.fault_500,
        fault_529=args.fault_529,
        fault_hang=args.fault_hang,
        fault_malformed=args.fault_malformed,
        retry_after=args.retry_after,
        rpm=args.rpm,
        api_key=args.api_key,
        structured=not args.no_structured,
        batch_latency=args.batch_latency,
        batch_fault=args.batch_fault,
        batch_cancel_delay=args.batch_cancel_delay,
        batch_expire_after=args.batch_expire_after,
        batch_fail_validation=args.batch_fail_validation,
        batch_token_limit=args.batch_token_limit,
        hold_file_create=args.hold_file_create,
        hold_batch_create=args.hold_batch_create,
        hold_results=args.hold_results,
    )
    return args.host, args.port, knobs


async def serve(host: str, port: int, knobs: Knobs) -> None:
    runner = web.AppRunner(Simulator(knobs).app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    host, port, knobs = parse_args(argv)
    asyncio.run(serve(host, port, knobs))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
