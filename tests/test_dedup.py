"""Repeated pairs found by an external sort: same answer as a dictionary, memory set by a run."""

from __future__ import annotations

import hashlib
import random
import tracemalloc

import pytest

from producer import dedup


def digest(value: int) -> bytes:
    return hashlib.blake2b(str(value).encode(), digest_size=16).digest()


def reference(values: list[int]) -> dict[int, int]:
    first: dict[int, int] = {}
    return {row: first[v] for row, v in enumerate(values) if first.setdefault(v, row) != row}


@pytest.mark.parametrize("run_rows", [7, 64, 100_000])
def test_repeats_across_runs_name_their_first_row(
    run_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dedup, "RUN_ROWS", run_rows)
    rng = random.Random(run_rows)
    values = [rng.randrange(300) for _ in range(1000)]  # many repeats, spread over runs
    repeats = dedup.Repeats()
    for value in values:
        repeats.add(digest(value))
    assert repeats.rows == 1000
    assert repeats.finish() == reference(values)


def test_memory_is_set_by_a_run_not_by_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small runs and merge blocks, so both inputs span many runs and fill the merge budget.
    monkeypatch.setattr(dedup, "RUN_ROWS", 2048)
    monkeypatch.setattr(dedup, "MERGE_RECORDS", 8192)

    def peak(rows: int) -> int:
        tracemalloc.start()
        repeats = dedup.Repeats()
        for row in range(rows):
            repeats.add(digest(row % (rows - 5)))  # the last five rows repeat the first five
        found = repeats.finish()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert found == {rows - 5 + i: i for i in range(5)}
        return top

    small, large = peak(20_000), peak(200_000)
    print(f"\npeak traced memory: {small:,} B for 20,000 rows, {large:,} B for 200,000")
    assert large < 1.5 * small
