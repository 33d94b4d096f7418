"""How a finished job ends for the shell: a systemic failure must not look like success.

Per-item error records are part of a normal run (an unparseable reply, an empty text). But
when every record of a model failed for one reason (a missing key on the workers, a model
name the server does not know, a prompt the server refuses), nothing was scored and the
same fix applies to all of it: the command says so and exits ``SYSTEMIC_EXIT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Exit codes of ibt commands (README, "Exit codes").
OK = 0
FAILED = 1
BAD_INPUT = 2
STILL_RUNNING = 3
SYSTEMIC_EXIT = 4
INTERRUPTED = 130
BROKEN_PIPE = 141


@dataclass(frozen=True)
class SystemicFailure:
    """Every one of ``count`` items of ``model`` failed with error kind ``kind``."""

    model: str
    kind: str
    count: int
    example: str

    def describe(self) -> str:
        return (
            f"every {self.model} item ({self.count}) failed the same way ({self.kind}): "
            f"{self.example}"
        )


def systemic_failures(summary: dict[str, Any], example: Any) -> list[SystemicFailure]:
    """The models whose every item is an error of one kind; ``example(model)`` gives the
    error text of one of its records."""
    failures = []
    for model, entry in summary["models"].items():
        kinds = entry.get("errors") or {}
        if entry.get("items") and not entry.get("scored") and len(kinds) == 1:
            kind = next(iter(kinds))
            if kind == "cancelled":  # the user's own doing, reported as such
                continue
            failures.append(SystemicFailure(model, kind, int(entry["items"]), example(model)))
    return failures
