"""The budget scripts on a real Valkey: atomic reservations, settlement, per-model caps."""

from __future__ import annotations

import threading

import pytest

from producer.local import ValkeyProcess
from workers import budget, jobstate, pricing
from workers.models import ModelSpec
from workers.records import ScoreRequest


def request(job: str, index: int, model: str = "m") -> ScoreRequest:
    return ScoreRequest(job, index, model, "q", "a", budget=True)


@pytest.fixture
def client(valkey: ValkeyProcess):  # type: ignore[no-untyped-def]
    return jobstate.client_for_url(valkey.url)


def test_reservations_never_exceed_the_cap_under_contention(client) -> None:  # type: ignore[no-untyped-def]
    budget.open_budget(client, "race", cap=1.0, model_caps={}, expires=600)
    amount = pricing.to_nano(0.03)  # 33 fit in $1, the 34th does not
    granted: list[int] = []

    def grab(offset: int) -> None:
        for i in range(20):
            if budget.reserve(client, request("race", offset * 100 + i), amount) == budget.OK:
                granted.append(1)

    threads = [threading.Thread(target=grab, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 33
    state = budget.read(client, "race")
    assert state is not None and state.job.reserved == 33 * amount <= state.job.cap  # type: ignore[operator]


def test_settling_frees_the_rest_and_waiters_then_fit(client) -> None:  # type: ignore[no-untyped-def]
    budget.open_budget(client, "settle", cap=0.10, model_caps={}, expires=600)
    big = pricing.to_nano(0.06)
    assert budget.reserve(client, request("settle", 0), big) == budget.OK
    # Does not fit beside the open reservation, but would once it settles: wait.
    assert budget.reserve(client, request("settle", 1), big) == budget.WAIT
    budget.settle(client, request("settle", 0), pricing.to_nano(0.01))
    assert budget.reserve(client, request("settle", 1), big) == budget.OK
    budget.settle(client, request("settle", 1), pricing.to_nano(0.05))
    # $0.06 spent: a $0.06 call can never fit any more.
    assert budget.reserve(client, request("settle", 2), big) == budget.OVER
    state = budget.read(client, "settle")
    assert state is not None
    assert (state.job.spent, state.job.reserved) == (pricing.to_nano(0.06), 0)
    # Settling twice (a redelivered report) changes nothing.
    budget.settle(client, request("settle", 1), pricing.to_nano(0.05))
    assert budget.read(client, "settle").job.spent == pricing.to_nano(0.06)  # type: ignore[union-attr]


def test_a_dead_workers_reservation_counts_as_spent_when_its_task_returns(client) -> None:  # type: ignore[no-untyped-def]
    budget.open_budget(client, "dead", cap=0.10, model_caps={}, expires=600)
    amount = pricing.to_nano(0.04)
    assert budget.reserve(client, request("dead", 7), amount) == budget.OK
    # The worker died mid-call; the redelivered task reserves again: the first call may have
    # been paid, so its reservation becomes spent.
    assert budget.reserve(client, request("dead", 7), amount) == budget.OK
    state = budget.read(client, "dead")
    assert state is not None
    assert (state.job.spent, state.job.reserved) == (amount, amount)


def test_a_model_cap_binds_only_its_model(client) -> None:  # type: ignore[no-untyped-def]
    budget.open_budget(client, "models", cap=None, model_caps={"cheap": 0.05}, expires=600)
    amount = pricing.to_nano(0.03)
    assert budget.reserve(client, request("models", 0, "cheap"), amount) == budget.OK
    assert budget.reserve(client, request("models", 1, "cheap"), amount) == budget.WAIT
    for index in range(5):
        assert budget.reserve(client, request("models", index, "other"), amount) == budget.OK
    state = budget.read(client, "models")
    assert state is not None and state.job.cap is None
    assert state.models["cheap"].cap == pricing.to_nano(0.05)
    assert state.models["other"].reserved == 5 * amount


def test_no_cap_means_no_budget_hash(client) -> None:  # type: ignore[no-untyped-def]
    assert budget.open_budget(client, "free", cap=None, model_caps={}, expires=600) is False
    assert budget.read(client, "free") is None


def test_worst_case_bounds_any_real_usage() -> None:
    spec = ModelSpec(
        name="m", provider="openai", model="m", input_price_per_mtok=2.0, output_price_per_mtok=8.0
    )
    prompt = "Évaluez cette réponse 😀 " * 50
    worst = pricing.worst_case_nano(spec, prompt, structured=False, batch=False)
    # A byte-level BPE never makes more tokens than bytes; max_tokens bounds the reply.
    real = pricing.cost_nano(spec, len(prompt.encode()), spec.max_tokens, batch=False)
    assert worst >= real
    assert pricing.worst_case_nano(spec, prompt, structured=False, batch=True) * 2 == (
        pytest.approx(worst, abs=2)
    )
    unpriced = ModelSpec(name="u", provider="openai", model="u")
    assert pricing.prices_of(unpriced) is None
