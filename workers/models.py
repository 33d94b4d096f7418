"""Model name → ModelSpec: which provider, which queue, which limits."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from workers.errors import ConfigError

PROVIDERS = ("openai", "anthropic")
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
DEFAULT_BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}
OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-")
ANTHROPIC_PREFIXES = ("claude-",)
QUEUE_PREFIX = "ibt.model."
COLLECT_QUEUE = "ibt.collect"
# Names of the two simulated judges (see producer/simulator.py). They are ordinary
# OpenAI/Anthropic-protocol models whose base URL is the local simulator, so the demo runs
# exactly the SDK code path production uses. Their names say "simulated" wherever they appear.
SIMULATED = {"simulated-openai": "openai", "simulated-anthropic": "anthropic"}
SIMULATED_KEY = "simulated-key-not-secret"


@dataclass(frozen=True)
class ModelSpec:
    """Everything a worker needs to call one judge model, and nothing secret.

    ``name`` is what the user typed (and what the output's ``model`` field shows);
    ``model`` is the id sent to the provider. ``base_url`` None means the SDK's standard
    variable (``OPENAI_BASE_URL``/``ANTHROPIC_BASE_URL``) or the provider's default.
    """

    name: str
    provider: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    concurrency: int = 64
    timeout: float = 60.0
    max_retries: int = 6
    temperature: float | None = None
    max_tokens: int = 512
    max_input_chars: int = 200_000
    rpm: int | None = None
    tpm: int | None = None
    # Requests allowed in any one second; None means rpm/60 rounded up, so a minute's budget
    # is spread over the minute instead of leaving in one burst (see workers/ratelimit.py).
    rps: int | None = None
    structured: bool = False
    # When a server refuses structured output (HTTP 400): "text" asks again in text mode,
    # "error" makes the item an error record.
    structured_fallback: str = "text"
    simulated: bool = False
    # Prices per million tokens, for ``ibt report``'s cost column; not used when judging.
    input_price_per_mtok: float | None = None
    output_price_per_mtok: float | None = None

    @property
    def queue(self) -> str:
        return queue_name(self.name)

    @property
    def key_env(self) -> str:
        return self.api_key_env or DEFAULT_KEY_ENV[self.provider]

    @property
    def base_url_env(self) -> str:
        return DEFAULT_BASE_URL_ENV[self.provider]


def queue_name(model_name: str) -> str:
    """The Celery queue of a model; characters outside [A-Za-z0-9._-] become '_'."""
    return QUEUE_PREFIX + re.sub(r"[^A-Za-z0-9._-]", "_", model_name)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "provider": (str,),
    "model": (str,),
    "base_url": (str,),
    "api_key_env": (str,),
    "concurrency": (int,),
    "timeout": (int, float),
    "max_retries": (int,),
    "temperature": (int, float),
    "max_tokens": (int,),
    "max_input_chars": (int,),
    "rpm": (int,),
    "tpm": (int,),
    "rps": (int,),
    "structured": (bool,),
    "structured_fallback": (str,),
    "input_price_per_mtok": (int, float),
    "output_price_per_mtok": (int, float),
}
_POSITIVE = {"concurrency", "timeout", "max_tokens", "max_input_chars", "rpm", "tpm", "rps"}
_NON_NEGATIVE = {"max_retries", "input_price_per_mtok", "output_price_per_mtok"}
_SPEC_FIELDS = {f.name for f in fields(ModelSpec)}


class ModelRegistry:
    """Resolves model names: models file first, then ``PROVIDER/NAME``, then name prefixes."""

    def __init__(self, defined: Mapping[str, ModelSpec] | None = None, *, source: str = "") -> None:
        self.defined: dict[str, ModelSpec] = dict(defined or {})
        self.source = source

    @classmethod
    def load(cls, path: str | None) -> ModelRegistry:
        """The registry of ``path`` (a TOML models file), or the built-in rules alone."""
        if not path:
            return cls()
        return cls(_read_models_file(Path(path)), source=path)

    def resolve(self, name: str) -> ModelSpec:
        name = name.strip()
        if not name:
            raise ConfigError("empty model name", source="--model")
        if name in self.defined:
            return self.defined[name]
        if name in SIMULATED:
            return ModelSpec(name=name, provider=SIMULATED[name], model=name, simulated=True)
        if "/" in name:
            provider, _, model = name.partition("/")
            if provider in PROVIDERS and model:
                return ModelSpec(name=name, provider=provider, model=model)
            raise ConfigError(
                f"unknown provider '{provider}' in model '{name}'; "
                f"use one of {', '.join(PROVIDERS)} (e.g. openai/llama3.1:8b for an "
                "OpenAI-compatible server) or define the model in a models file",
                source="--model",
            )
        if name.startswith(OPENAI_PREFIXES):
            return ModelSpec(name=name, provider="openai", model=name)
        if name.startswith(ANTHROPIC_PREFIXES):
            return ModelSpec(name=name, provider="anthropic", model=name)
        hint = f" (models file: {self.source})" if self.source else ""
        raise ConfigError(
            f"unknown model '{name}'{hint}: names starting with gpt-/o1/o3/o4/chatgpt- go to "
            "OpenAI and claude- to Anthropic; write PROVIDER/NAME (e.g. openai/llama3.1:8b) "
            "or define it in a models file (--models-file / IBT_MODELS_FILE)",
            source="--model",
        )

    def resolve_all(self, names: Iterable[str]) -> list[ModelSpec]:
        """Resolve and check that names are unique and that no two share a queue."""
        specs: list[ModelSpec] = []
        queues: dict[str, str] = {}
        for name in names:
            spec = self.resolve(name)
            if spec.name in (s.name for s in specs):
                raise ConfigError(f"model '{spec.name}' given twice", source="--model")
            if spec.queue in queues:
                raise ConfigError(
                    f"models '{queues[spec.queue]}' and '{spec.name}' map to the same queue "
                    f"'{spec.queue}'; rename one in a models file",
                    source="--model",
                )
            queues[spec.queue] = spec.name
            specs.append(spec)
        if not specs:
            raise ConfigError("no model given (use -m MODEL)", source="--model")
        return specs


def _line_of(text: str, needle: str, start: int = 0) -> int | None:
    idx = text.find(needle, start)
    return None if idx < 0 else text.count("\n", 0, idx) + 1


def _read_models_file(path: Path) -> dict[str, ModelSpec]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read models file: {exc}", source=source) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=source) from exc
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigError(
            'expected a [models."NAME"] table per model', source=source, field="models"
        )
    specs: dict[str, ModelSpec] = {}
    for name, table in models.items():
        header = _line_of(text, name) or None
        if not isinstance(table, dict):
            raise ConfigError("must be a table", source=source, line=header, field=name)
        specs[name] = _spec_from_table(name, table, text, source, header)
    return specs


def _spec_from_table(
    name: str, table: dict[str, Any], text: str, source: str, header: int | None
) -> ModelSpec:
    def error(key: str, message: str) -> ConfigError:
        start = 0
        if header is not None:
            start = sum(len(line) + 1 for line in text.splitlines()[: header - 1])
        line = _line_of(text, key, start) or header
        return ConfigError(message, source=source, line=line, field=f"models.{name}.{key}")

    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _FIELD_TYPES:
            known = ", ".join(sorted(_FIELD_TYPES))
            raise error(key, f"unknown field; known fields: {known}")
        expected = _FIELD_TYPES[key]
        if isinstance(value, bool) and bool not in expected:
            raise error(key, f"must be {expected[0].__name__}, got boolean")
        if not isinstance(value, expected):
            raise error(key, f"must be {expected[0].__name__}, got {type(value).__name__}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if key in _POSITIVE and value <= 0:
                raise error(key, "must be positive")
            if key in _NON_NEGATIVE and value < 0:
                raise error(key, "must be zero or more")
            if key == "temperature" and not 0 <= value <= 2:
                raise error(key, "must be between 0 and 2")
            if expected == (int, float):
                value = float(value)
        values[key] = value
    provider = values.pop("provider", None)
    if provider is None:
        if name.startswith(OPENAI_PREFIXES):
            provider = "openai"
        elif name.startswith(ANTHROPIC_PREFIXES):
            provider = "anthropic"
        else:
            raise error("provider", f"missing; must be one of {', '.join(PROVIDERS)}")
    if values.get("structured_fallback", "text") not in ("text", "error"):
        raise error("structured_fallback", "must be 'text' or 'error'")
    if provider not in PROVIDERS:
        raise error("provider", f"'{provider}' is not one of {', '.join(PROVIDERS)}")
    spec = ModelSpec(name=name, provider=provider, model=values.pop("model", name))
    assert set(values) <= _SPEC_FIELDS
    return replace(spec, **values)
