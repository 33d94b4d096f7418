"""The JSON schema of a structured verdict: reasoning first, so the judge thinks, then scores."""

from __future__ import annotations

from typing import Any

VERDICT_TOOL = "record_verdict"
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "description": "Brief reasoning for the score."},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["reasoning", "score"],
    "additionalProperties": False,
}
