"""What is wrong with a job's configuration, found before anything is enqueued or paid for:
the prompt template, each model's endpoint and key, a cost cap that cannot be enforced."""

from __future__ import annotations

import math
from collections.abc import Sequence
from urllib.parse import urlsplit

from workers.errors import ConfigError
from workers.models import ModelSpec
from workers.pricing import prices_of
from workers.prompt import load_template
from workers.providers import needs_key
from workers.settings import get_settings


def check_budget(specs: Sequence[ModelSpec], max_cost: float | None) -> None:
    """A cap needs a price for every model it covers; a bad cap is refused before submitting."""
    if max_cost is not None and not (math.isfinite(max_cost) and max_cost > 0):
        raise ConfigError("must be a positive amount in USD", source="--max-cost")
    for spec in specs:
        if (max_cost is not None or spec.max_cost is not None) and prices_of(spec) is None:
            raise ConfigError(
                f"model '{spec.name}' has no price, so a cost cap cannot be enforced on it: set "
                "input_price_per_mtok and output_price_per_mtok for it in a models file",
                source="--max-cost" if max_cost is not None else "models file",
                field=None if max_cost is not None else f"models.{spec.name}.max_cost",
            )


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
