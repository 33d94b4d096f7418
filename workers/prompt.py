"""Renders the judge prompt from a template file; the rubric is data, not code."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from string import Template

from workers.errors import ConfigError

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "judge.txt"
REQUIRED = ("instruction", "generation")


@cache
def load_template(path: str | None = None) -> Template:
    """The ``string.Template`` at ``path`` (default: the built-in Humpback-style rubric).

    ``$instruction`` and ``$generation`` (or ``${...}``) must both appear; ``string.Template``
    rather than ``str.format`` so braces in a rubric (e.g. a JSON example) need no escaping.
    """
    file = Path(path) if path else DEFAULT_TEMPLATE
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read prompt template: {exc}", source=str(file)) from exc
    template = Template(text)
    names = set(template.get_identifiers())
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise ConfigError(
            f"prompt template must contain ${{{missing[0]}}}", source=str(file), field=missing[0]
        )
    return template


def render(instruction: str, generation: str, template_path: str | None = None) -> str:
    return load_template(template_path).safe_substitute(
        instruction=instruction, generation=generation
    )


def template_digest(template_path: str | None = None) -> str:
    """A short hash of the template text; part of the cache key, so a new rubric re-judges."""
    return hashlib.sha256(load_template(template_path).template.encode()).hexdigest()[:16]
