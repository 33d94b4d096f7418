"""The producer: CLI, Python API, input loading, job submission and output.

The public Python API is ``score_pairs``, the seed-compatible ``ParallelExecutor``, and
``embedded_session`` to reuse one embedded stack across calls.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ParallelExecutor", "embedded_session", "score_pairs"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m producer.simulator` and `ibt worker` do not import the API stack.
    if name in __all__:
        from producer import api

        return getattr(api, name)
    raise AttributeError(name)
