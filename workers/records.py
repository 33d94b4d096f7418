"""The shapes that cross processes: the task message and the result record, built in one place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workers.errors import ProviderError
from workers.parsing import Unparseable, Verdict

OUTPUT_KEYS = ("reasoning", "score", "instruction", "generation", "model")


@dataclass(frozen=True)
class ScoreRequest:
    """One (pair, model) to judge: the whole task message. JSON-safe, no secrets."""

    job: str
    index: int
    model: str
    instruction: str
    generation: str
    use_cache: bool = True
    # None: the model's own setting; True/False: the producer's --structured / --text choice.
    structured: bool | None = None
    # Provider attempts made so far, and waits on another task's claim: carried in the
    # message so a retry knows its history whatever Celery's own retry counter says.
    attempt: int = 0
    waits: int = 0
    # The job has a cost cap: every call reserves against it first (workers/budget.py).
    budget: bool = False
    # None: the model's own ``batch`` setting; True: the producer's --batch.
    batch: bool | None = None
    # Send synchronously even for a batch-mode model (a batch's transient failure, retried
    # online as the model's batch_fallback asks).
    online: bool = False
    # Self-consistency (``ibt score --samples N``): ask the judge N times and keep the
    # median; 1 is one call, as without the option (workers/sampling.py).
    samples: int = 1

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "job": self.job,
            "index": self.index,
            "model": self.model,
            "instruction": self.instruction,
            "generation": self.generation,
        }
        if not self.use_cache:
            message["cache"] = False
        if self.structured is not None:
            message["structured"] = self.structured
        if self.attempt:
            message["attempt"] = self.attempt
        if self.waits:
            message["waits"] = self.waits
        if self.budget:
            message["budget"] = True
        if self.batch is not None:
            message["batch"] = self.batch
        if self.online:
            message["online"] = True
        if self.samples > 1:
            message["samples"] = self.samples
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ScoreRequest:
        return cls(
            job=str(message["job"]),
            index=int(message["index"]),
            model=str(message["model"]),
            instruction=str(message["instruction"]),
            generation=str(message["generation"]),
            use_cache=bool(message.get("cache", True)),
            structured=message.get("structured"),
            attempt=int(message.get("attempt", 0)),
            waits=int(message.get("waits", 0)),
            budget=bool(message.get("budget", False)),
            batch=message.get("batch"),
            online=bool(message.get("online", False)),
            samples=int(message.get("samples", 1)),
        )

    @property
    def task_id(self) -> str:
        return task_id(self.job, self.index, self.model)

    def summary(self) -> str:
        """What Flower and logs show instead of the texts."""
        return f"job={self.job} pair={self.index} model={self.model}"


def task_id(job: str, index: int, model: str) -> str:
    """Deterministic identity of a (job, pair, model): redeliveries and retries share it."""
    return f"ibt-{job}-{index}-{model}"


def ok_record(request: ScoreRequest, verdict: Verdict) -> dict[str, Any]:
    return {
        "reasoning": verdict.reasoning,
        "score": str(verdict.score),
        "instruction": request.instruction,
        "generation": request.generation,
        "model": request.model,
    }


def median_score(scores: Sequence[int]) -> int:
    """The aggregate of a judge's sample scores: their median, and of an even number of
    them the lower of the two middle values, so it stays a score on the rubric (3 and 4
    give 3: the cautious one, as curation keeps what scores high)."""
    if not scores:
        raise ValueError("no scores")
    ordered = sorted(scores)
    return ordered[(len(ordered) - 1) // 2]


def sampled_record(
    request: ScoreRequest, verdicts: Sequence[Verdict | Unparseable]
) -> dict[str, Any]:
    """The record of N samples of one judge: the median score (``median_score``), the
    reasoning of the first sample that gave it, and ``samples``, every sample's score in the
    order asked (null for an unparseable one). All unparseable: an unparseable error record
    (the first reply as ``raw``), still with ``samples``."""
    scores = [v.score if isinstance(v, Verdict) else None for v in verdicts]
    usable = [score for score in scores if score is not None]
    if not usable:
        first = next(v for v in verdicts if isinstance(v, Unparseable))
        record = error_record(
            request,
            f"unparseable reply: {first.why} (none of {len(verdicts)} samples could be read)",
            kind="unparseable",
            raw=first.raw,
        )
    else:
        score = median_score(usable)
        chosen = next(v for v in verdicts if isinstance(v, Verdict) and v.score == score)
        record = ok_record(request, chosen)
    # After the documented keys (and ``error``/``raw``), before the internal ones.
    kind = record.pop("_kind", None)
    record["samples"] = scores
    if kind is not None:
        record["_kind"] = kind
    return record


def error_record(
    request: ScoreRequest, error: str, *, kind: str, raw: str | None = None
) -> dict[str, Any]:
    """An item that could not be scored: same keys plus ``error`` (and the raw reply)."""
    record: dict[str, Any] = {
        "reasoning": None,
        "score": None,
        "instruction": request.instruction,
        "generation": request.generation,
        "model": request.model,
        "error": error,
    }
    if raw is not None:
        record["raw"] = raw
    record["_kind"] = kind
    return record


def unparseable_record(request: ScoreRequest, reply: Unparseable) -> dict[str, Any]:
    return error_record(
        request, f"unparseable reply: {reply.why}", kind="unparseable", raw=reply.raw
    )


def provider_error_record(
    request: ScoreRequest, exc: ProviderError, attempts: int
) -> dict[str, Any]:
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    return error_record(request, f"{exc.kind}: {exc.message}{tried}", kind=exc.kind)


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The record as users see it: internal ``_`` keys removed."""
    return {key: value for key, value in record.items() if not key.startswith("_")}
