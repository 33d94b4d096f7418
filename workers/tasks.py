"""Thin glue: the score task (one per pair and model) and the collect callback."""

from __future__ import annotations

import json
import logging
import time
from functools import cache
from typing import Any

from celery import Task

from workers import jobstate
from workers.app import app
from workers.errors import ConfigError, ProviderError
from workers.judge import judge
from workers.models import ModelRegistry
from workers.records import ScoreRequest, error_record, provider_error_record, public
from workers.retry import retry_delay
from workers.settings import get_settings

log = logging.getLogger("ibt.worker")


@cache
def registry() -> ModelRegistry:
    return ModelRegistry.load(get_settings().models_file)


def _redis() -> Any:
    return app.backend.client  # the result backend's pooled connection


@app.task(name="ibt.score", bind=True, acks_late=True)
def score(self: Task, message: dict[str, Any]) -> dict[str, Any]:
    """Judge one (pair, model). Never raises: every outcome is a record the chord collects."""
    settings = get_settings()
    request = ScoreRequest.from_message(message)
    attempt = self.request.retries
    started = time.monotonic()
    try:
        spec = registry().resolve(request.model)
    except ConfigError as exc:
        record = error_record(request, f"config: {exc}", kind="config")
    else:
        try:
            record = judge(request, spec)
        except ProviderError as exc:
            if exc.retryable and attempt < spec.max_retries:
                delay = retry_delay(
                    attempt,
                    exc.retry_after,
                    base=settings.retry_backoff_base,
                    cap=settings.retry_backoff_max,
                )
                # A retry is re-published with an ETA and held unacknowledged until then; it
                # must come due well inside the visibility timeout or Redis redelivers it.
                delay = min(delay, max(1.0, 0.8 * settings.visibility_timeout - spec.timeout))
                jobstate.record_retry(_redis(), request.job, request.model, settings.result_expires)
                raise self.retry(countdown=delay, max_retries=spec.max_retries) from None
            record = provider_error_record(request, exc, attempt + 1)
        except Exception as exc:  # a bug here must cost one record, not the whole job
            log.exception("internal error judging %s", request.summary())
            record = error_record(request, f"internal: {exc!r}", kind="internal")
    record["_i"] = request.index
    record["_attempts"] = attempt + 1
    tokens = record.get("_tokens") or [0, 0]
    jobstate.record_outcome(
        _redis(),
        request.job,
        request.model,
        request.index,
        error="error" in record,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cached=bool(record.get("_cached")),
        expires=settings.result_expires,
    )
    log.info(
        json.dumps(
            {
                "event": "task_finished",
                "job": request.job,
                "pair": request.index,
                "model": request.model,
                "attempts": attempt + 1,
                "latency_ms": round((time.monotonic() - started) * 1000, 1),
                "tokens_in": tokens[0],
                "tokens_out": tokens[1],
                "outcome": record.get("_kind", "ok"),
            }
        )
    )
    return record


@app.task(name="ibt.collect", bind=True, acks_late=True)
def collect(
    self: Task, records: list[dict[str, Any]], job: str, models: list[str]
) -> dict[str, Any]:
    """Chord callback: the documented list in input order, and the run summary."""
    position = {name: i for i, name in enumerate(models)}
    unique: dict[tuple[int, str], dict[str, Any]] = {}
    for record in records:
        unique.setdefault((int(record["_i"]), record["model"]), record)
    ordered = sorted(unique.items(), key=lambda item: (item[0][0], position.get(item[0][1], 0)))
    summary = summarize([record for _, record in ordered], models)
    client = _redis()
    jobstate.set_status(client, job, "done", finished=time.time(), summary=json.dumps(summary))
    return {"job": job, "results": [public(record) for _, record in ordered], "summary": summary}


def summarize(records: list[dict[str, Any]], models: list[str]) -> dict[str, Any]:
    """Per model: items, scored, errors by kind, attempts and tokens."""
    per_model: dict[str, dict[str, Any]] = {
        name: {
            "items": 0,
            "scored": 0,
            "errors": {},
            "attempts": 0,
            "cached": 0,
            "input_tokens": 0,
            "output_tokens": 0,
        }
        for name in models
    }
    for record in records:
        entry = per_model.setdefault(
            record["model"],
            {
                "items": 0,
                "scored": 0,
                "errors": {},
                "attempts": 0,
                "cached": 0,
                "input_tokens": 0,
                "output_tokens": 0,
            },
        )
        entry["items"] += 1
        entry["attempts"] += int(record.get("_attempts", 1))
        entry["cached"] += int(bool(record.get("_cached")))
        tokens = record.get("_tokens") or [0, 0]
        entry["input_tokens"] += tokens[0]
        entry["output_tokens"] += tokens[1]
        if "error" in record:
            kind = record.get("_kind", "error")
            entry["errors"][kind] = entry["errors"].get(kind, 0) + 1
        else:
            entry["scored"] += 1
    return {"models": per_model, "items": len(records)}
