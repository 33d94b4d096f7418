"""The public Python API: ``score_pairs`` and the seed-compatible ``ParallelExecutor``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from producer.checks import check_budget, check_config, check_local_credentials
from producer.inputs import Pair, validate_records
from producer.local import LocalStack
from workers.errors import InputError
from workers.models import ModelRegistry, ModelSpec
from workers.settings import get_settings

if TYPE_CHECKING:  # Celery is imported once a job runs: after the embedded stack is starting
    from celery import Celery

    from producer.job import ProgressCallback


@dataclass
class Session:
    """Where a job runs: a broker app, and (embedded) a liveness check of local processes."""

    app: Celery
    embedded: bool
    check_alive: Callable[[], None] | None = None
    # The workers go on after this job: a cluster's, or a reused embedded stack's.
    workers_stay: bool = False


def resolve_models(names: Sequence[str]) -> list[ModelSpec]:
    return ModelRegistry.load(get_settings().models_file).resolve_all(names)


def check_samples(specs: Sequence[ModelSpec], samples: int, batch: bool | None) -> list[str]:
    """Refuse ``--samples N`` where it cannot work (N < 1; N > 1 with ``--batch`` or a
    model with ``batch = true``: the N calls are asked one after the other); the notes to
    show about the temperature each judge is sampled at."""
    from workers.sampling import sampling_temperature

    if samples < 1:
        raise InputError(f"must be at least 1, got {samples}", source="--samples")
    if samples == 1:
        return []
    batched = [spec.name for spec in specs if (spec.batch if batch is None else batch)]
    if batched:
        why = "--batch" if batch else f"batch = true in the models file ({', '.join(batched)})"
        raise InputError(
            f"cannot be combined with {why}: the N calls of a pair are asked synchronously",
            source="--samples",
        )
    notes = []
    for spec in specs:
        if spec.reasons:
            notes.append(
                f"{spec.name}: a reasoning model takes no temperature; its {samples} samples "
                "vary at the provider's own"
            )
        elif not spec.temperature:
            given = "unset" if spec.temperature is None else "0"
            notes.append(
                f"{spec.name}: {samples} samples at temperature "
                f"{sampling_temperature(spec)} (its models-file temperature is {given})"
            )
    return notes


@dataclass
class _Reused:
    stack: LocalStack
    app: Celery


_reused: _Reused | None = None
_reused_lock = threading.Lock()


@contextmanager
def embedded_session(*, workers_per_model: int = 1) -> Iterator[None]:
    """Inside this block every ``score_pairs`` and ``ParallelExecutor.run`` call reuses one
    embedded stack (Valkey, simulator, workers) instead of starting one per call (~2 s
    each). Workers for a model start on the first call that needs it and stay until the
    block ends; the stack then stops as after a single call, leaving no process behind. A
    call that is interrupted or fails cancels its job, so the workers left running do not
    go on spending for it.

    Has no effect when ``IBT_BROKER_URL`` is set: calls then submit to that cluster.
    """
    global _reused
    if get_settings().broker_url:
        yield
        return
    from workers.app import create_app

    with contextlib.ExitStack() as resources:
        with _reused_lock:
            if _reused is not None:
                raise RuntimeError("embedded_session() is already open in this process")
            stack = resources.enter_context(LocalStack([], workers_per_model=workers_per_model))
            app = create_app(stack.broker_url)
            resources.callback(app.pool.force_close_all)
            _reused = _Reused(stack=stack, app=app)
        try:
            yield
        finally:
            with _reused_lock:
                _reused = None


@contextmanager
def early_stack(specs: Sequence[ModelSpec]) -> Iterator[LocalStack | None]:
    """The embedded stack a job on ``specs`` will run on, started now, for ``session``.

    ``ibt score`` starts it once its input is validated, before importing what submits and
    follows the job, so that the workers' start-up (most of a small job's wall time) overlaps
    with that work. Nothing is enqueued until ``session``. None when the job goes to a
    cluster or to an open ``embedded_session``'s stack.
    """
    if get_settings().broker_url or _reused is not None:
        yield None
        return
    check_local_credentials(specs)
    with LocalStack(specs) as stack:
        yield stack


@contextmanager
def session(
    specs: Sequence[ModelSpec],
    *,
    workers_per_model: int = 1,
    started: LocalStack | None = None,
) -> Iterator[Session]:
    """A broker to submit to: ``IBT_BROKER_URL`` if set, the stack of an open
    ``embedded_session``, the ``started`` stack (``early_stack``), else a fresh embedded
    stack for this one job.

    Celery is imported only after the embedded stack's processes are started, so their
    start-up overlaps with this import.
    """
    settings = get_settings()
    if started is not None:
        with _session_on(started) as current:
            yield current
        return
    if settings.broker_url:
        from workers.app import create_app

        yield Session(app=create_app(settings.broker_url, settings.result_backend), embedded=False)
        return
    check_local_credentials(specs)
    with _reused_lock:
        reused = _reused
        if reused is not None:
            reused.stack.serve(specs)
    if reused is not None:
        models = [spec.name for spec in specs]
        yield Session(
            app=reused.app,
            embedded=True,
            check_alive=lambda: reused.stack.check_alive(models),
            workers_stay=True,
        )
        return
    with (
        LocalStack(specs, workers_per_model=workers_per_model) as stack,
        _session_on(stack) as current,
    ):
        yield current


@contextmanager
def _session_on(stack: LocalStack) -> Iterator[Session]:
    from workers.app import create_app

    app = create_app(stack.broker_url)
    try:
        yield Session(app=app, embedded=True, check_alive=stack.check_alive)
    finally:
        app.pool.force_close_all()


def score_pairs(
    pairs: Iterable[Pair | dict[str, Any]],
    models: Sequence[str],
    *,
    on_progress: ProgressCallback | None = None,
    max_cost: float | None = None,
    batch: bool | None = None,
    samples: int = 1,
) -> list[dict[str, Any]]:
    """Score every pair with every model and return the documented list, in input order.

    Pairs are validated before anything is enqueued (``InputError`` names the record).
    ``max_cost`` caps what the job may spend in USD (items it cannot cover become error
    records of kind ``budget``); ``batch=True`` sends every model's items through its
    provider's Batch API (None: each model's own ``batch`` setting); ``samples=N`` asks
    each judge N times per pair and keeps the median (``ibt score --samples``; refused with
    batches, ``InputError``).
    """
    from producer import job as jobs
    from workers.feeding import Options

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
    check_budget(specs, max_cost)
    check_samples(specs, samples, batch)
    with session(specs) as current:
        # All at once (no window), as jobs.submit sends, with the job's sampling.
        options = Options(batch=batch, samples=samples)
        job = jobs.start(
            current.app, checked, specs, options=options, max_cost=max_cost, window=None
        ).job
        try:
            return jobs.wait(
                current.app, job, on_progress=on_progress, check_alive=current.check_alive
            ).results  # read while the (maybe embedded) broker is still up
        except BaseException:
            # Nobody waits for this job any more: nothing may go on spending for it. (If
            # the broker is gone too, the original error is the one to see.)
            with contextlib.suppress(Exception):
                workers_stay = current.workers_stay or not current.embedded
                jobs.cancel(current.app, job, specs, workers_stay=workers_stay)
            raise


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
