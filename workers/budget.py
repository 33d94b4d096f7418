"""A hard cap on what a job may spend, enforced in Redis across every worker and host.

``ibt score --max-cost USD`` (and ``max_cost`` per model in a models file) opens a budget
hash for the job. Before each provider call, or each item put in a provider batch, the
worker reserves the call's worst-case cost (workers/pricing.py: every input byte a token,
``max_tokens`` out, a reasoning model's one retry included) with one atomic script; when the
reply arrives the reservation is settled to the cost of its real usage. A call that could
not fit even if every open reservation settled to nothing is never sent: it becomes an error
record of kind ``budget``.
One that does not fit only because of open reservations waits for them.

A failed call settles to nothing when the provider answered with an error status (errors are
not billed) and to its worst case when the outcome is unknown (a timeout, a dropped
connection, a worker that died mid-call): the cap holds whatever such a call cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from workers.jobstate import queue_script, script
from workers.pricing import from_nano, to_nano
from workers.records import ScoreRequest, error_record

KIND = "budget"
OK, WAIT, OVER = 1, -1, 0


class BudgetWait(Exception):
    """The call may fit the job's budget once other calls' reservations settle."""


def budget_key(job: str) -> str:
    return f"ibt:job:{job}:budget"


def open_budget(
    client: redis.Redis,
    job: str,
    *,
    cap: float | None,
    model_caps: dict[str, float],
    expires: int,
) -> bool:
    """Set the job's caps (USD) before its first task is sent; False when there are none."""
    mapping: dict[str, int] = {}
    if cap is not None:
        mapping["cap"] = to_nano(cap)
    for model, model_cap in model_caps.items():
        mapping[f"{model}:cap"] = to_nano(model_cap)
    if not mapping:
        return False
    with client.pipeline() as pipe:
        pipe.hset(budget_key(job), mapping=mapping)  # type: ignore[arg-type]
        pipe.expire(budget_key(job), expires)
        pipe.execute()
    return True


def reserve(client: redis.Redis, request: ScoreRequest, amount: int) -> int:
    """OK (reserved), WAIT (may fit once open reservations settle) or OVER (never fits)."""
    keys = [budget_key(request.job)]
    args = [request.model, request.task_id, amount]
    return int(script(client, "budget_reserve")(keys=keys, args=args))


def reserve_or_refuse(
    client: redis.Redis, request: ScoreRequest, amount: int
) -> dict[str, Any] | None:
    """Reserve ``amount`` for ``request``: None when reserved, the ``budget`` error record
    when it can never fit; raises BudgetWait when it may fit once reservations settle."""
    verdict = reserve(client, request, amount)
    if verdict == OVER:
        return over_budget_record(request, amount, read(client, request.job))
    if verdict == WAIT:
        raise BudgetWait
    return None


def cost_of(record: dict[str, Any], reserved: int) -> int:
    """What a finished item's reservation settles to: nothing if no call was made (an item
    not worth one), its reservation if the reply carried no usage (assume the worst), else
    the cost of its usage."""
    tokens = record.get("_tokens")
    if tokens is None:
        return 0
    if not any(tokens):
        return reserved
    return int(record.get("_cost", reserved))


def settle(
    client: redis.Redis,
    request: ScoreRequest,
    cost: int,
    pipe: redis.client.Pipeline | None = None,
) -> None:
    """Replace ``request``'s reservation by ``cost`` (nano-dollars); queued on ``pipe`` if given."""
    keys = [budget_key(request.job)]
    args = [request.model, request.task_id, cost]
    if pipe is not None:
        queue_script(pipe, "budget_settle", keys, args)
    else:
        script(client, "budget_settle")(keys=keys, args=args)


def over_budget_record(request: ScoreRequest, needed: int, state: Budget | None) -> dict[str, Any]:
    """The record of an item the budget could not cover: never sent, never paid."""
    left = ""
    if state is not None:
        left = f"; {state.describe(request.model)}"
    return error_record(
        request,
        f"budget: this call could cost up to ${from_nano(needed):.6f}, more than the job's "
        f"budget has left{left}",
        kind=KIND,
    )


@dataclass(frozen=True)
class Spend:
    """Spent, reserved and cap (nano-dollars) of the job or of one model in it."""

    spent: int = 0
    reserved: int = 0
    cap: int | None = None

    def describe(self) -> str:
        text = f"${from_nano(self.spent):.4f} spent"
        if self.cap is not None:
            text += f" of ${from_nano(self.cap):.4f}"
        return text


@dataclass(frozen=True)
class Budget:
    """A snapshot of a job's budget hash."""

    job: Spend
    models: dict[str, Spend] = field(default_factory=dict)

    def describe(self, model: str | None = None) -> str:
        parts = [f"job {self.job.describe()}"] if self.job.cap is not None else []
        entry = self.models.get(model or "")
        if entry is not None and entry.cap is not None:
            parts.append(f"{model} {entry.describe()}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        def one(spend: Spend) -> dict[str, Any]:
            cap = None if spend.cap is None else from_nano(spend.cap)
            return {"spent_usd": from_nano(spend.spent), "cap_usd": cap}

        return {**one(self.job), "models": {m: one(s) for m, s in self.models.items()}}


def read(client: redis.Redis, job: str) -> Budget | None:
    """The job's budget, or None when it has no cap."""
    raw: dict[str, str] = client.hgetall(budget_key(job))  # type: ignore[assignment]
    if not raw:
        return None
    return parse(raw)


def parse(raw: dict[str, str]) -> Budget:
    def spend(prefix: str) -> Spend:
        cap = raw.get(prefix + "cap")
        return Spend(
            spent=int(raw.get(prefix + "spent", 0)),
            reserved=int(raw.get(prefix + "reserved", 0)),
            cap=None if cap is None else int(cap),
        )

    models = {
        name.removesuffix(":cap") for name in raw if name.endswith(":cap") and ":" in name
    } | {
        name.rsplit(":", 1)[0]
        for name in raw
        if name.endswith((":spent", ":reserved")) and not name.startswith("res:")
    }
    return Budget(job=spend(""), models={model: spend(model + ":") for model in sorted(models)})
