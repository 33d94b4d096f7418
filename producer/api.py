"""The public Python API: ``score_pairs`` and the seed-compatible ``ParallelExecutor``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from celery import Celery

from producer import job as jobs
from producer.inputs import Pair, validate_records
from producer.local import LocalStack
from workers.app import create_app
from workers.errors import ConfigError
from workers.models import ModelRegistry, ModelSpec
from workers.prompt import load_template
from workers.providers import needs_key
from workers.settings import get_settings


@dataclass
class Session:
    """Where a job runs: a broker app, and (embedded) a liveness check of local processes."""

    app: Celery
    embedded: bool
    check_alive: jobs.Callable[[], None] | None = None


def resolve_models(names: Sequence[str]) -> list[ModelSpec]:
    return ModelRegistry.load(get_settings().models_file).resolve_all(names)


def check_config(specs: Sequence[ModelSpec]) -> None:
    """Everything the workers would otherwise find wrong on every item, found before
    anything is enqueued: the prompt template and each model's endpoint."""
    settings = get_settings()
    load_template(settings.prompt_file)
    for spec in specs:
        if spec.base_url:
            source = settings.models_file or "models file"
            _check_url(spec.base_url, source=source, field=f"models.{spec.name}.base_url")
        elif url := settings.env(spec.base_url_env):
            _check_url(url, source="environment", field=spec.base_url_env)


def _check_url(url: str, *, source: str, field: str) -> None:
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"not an http(s) URL: {url!r}", source=source, field=field)


def check_local_credentials(specs: Sequence[ModelSpec]) -> None:
    """Embedded workers inherit this environment, so a missing key is known before submitting."""
    settings = get_settings()
    for spec in specs:
        if needs_key(spec) and not settings.secret(spec.key_env):
            raise ConfigError(
                f"{spec.key_env} is not set, so model '{spec.name}' cannot be called. Set it, "
                "or try the simulated judges: -m simulated-openai -m simulated-anthropic",
                source="environment",
                field=spec.key_env,
            )


@contextmanager
def session(specs: Sequence[ModelSpec], *, workers_per_model: int = 1) -> Iterator[Session]:
    """A broker to submit to: ``IBT_BROKER_URL`` if set, else a fresh embedded stack."""
    settings = get_settings()
    if settings.broker_url:
        yield Session(app=create_app(settings.broker_url, settings.result_backend), embedded=False)
        return
    check_local_credentials(specs)
    with LocalStack(specs, workers_per_model=workers_per_model) as stack:
        app = create_app(stack.broker_url)
        try:
            yield Session(app=app, embedded=True, check_alive=stack.check_alive)
        finally:
            app.pool.force_close_all()


def score_pairs(
    pairs: Iterable[Pair | dict[str, Any]],
    models: Sequence[str],
    *,
    on_progress: jobs.ProgressCallback | None = None,
    max_cost: float | None = None,
    batch: bool | None = None,
) -> list[dict[str, Any]]:
    """Score every pair with every model and return the documented list, in input order.

    Pairs are validated before anything is enqueued (``InputError`` names the record).
    ``max_cost`` caps what the job may spend in USD (items it cannot cover become error
    records of kind ``budget``); ``batch=True`` sends every model's items through its
    provider's Batch API (None: each model's own ``batch`` setting).
    """
    items = list(pairs)
    if all(isinstance(item, Pair) for item in items):
        checked: list[Pair] = items  # type: ignore[assignment]
    else:
        checked = validate_records(
            [
                {"instruction": i.instruction, "generation": i.generation, **_extra(i)}
                if isinstance(i, Pair)
                else i
                for i in items
            ]
        )
    specs = resolve_models(models)
    check_config(specs)
    jobs.check_budget(specs, max_cost)
    with session(specs) as current:
        job = jobs.submit(current.app, checked, specs, max_cost=max_cost, batch=batch)
        return jobs.wait(
            current.app, job, on_progress=on_progress, check_alive=current.check_alive
        ).results  # read while the (maybe embedded) broker is still up


def _extra(pair: Pair) -> dict[str, Any]:
    return json.loads(pair.extra) if pair.extra else {}


class ParallelExecutor:
    """Drop-in for the seed's executor: ``set_models``, ``load_instructions``, ``await run()``."""

    def __init__(self) -> None:
        self.models: list[str] = []
        self.pairs: list[Pair] = []

    def set_models(self, models: Sequence[Any]) -> None:
        self.models = [str(getattr(model, "value", model)) for model in models]
        resolve_models(self.models)

    def load_instructions(self, records: Iterable[Any]) -> None:
        self.pairs.extend(validate_records(records))

    async def run(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(score_pairs, list(self.pairs), self.models)
