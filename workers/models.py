"""Model name → ModelSpec: which provider, which queue, which limits."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from workers import catalog
from workers.errors import ConfigError

PROVIDERS = ("openai", "anthropic")
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
DEFAULT_BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}
OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-")
# OpenAI's reasoning families: they refuse temperature and max_tokens (max_completion_tokens
# instead) and spend part of that budget on hidden reasoning. ``reasoning`` in a models file
# overrides the name (a compatible server's reasoning model, a gpt-5 chat variant).
REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
REASONING_EFFORTS = ("low", "medium", "high")
# A reasoning model whose whole completion budget went on hidden reasoning is asked once more
# with this much (unless the models file says reasoning_retry_max_tokens): at least
# REASONING_RETRY_MIN tokens, and RETRY_FACTOR times the first budget.
REASONING_RETRY_FACTOR = 4
REASONING_RETRY_MIN = 8192
# Anthropic's floor for thinking.budget_tokens.
MIN_THINKING_BUDGET = 1024
DEFAULT_MAX_TOKENS = 512
ANTHROPIC_PREFIXES = ("claude-",)
QUEUE_PREFIX = "ibt.model."
COLLECT_QUEUE = "ibt.collect"
# Names of the two simulated judges (see producer/simulator.py). They are ordinary
# OpenAI/Anthropic-protocol models whose base URL is the local simulator, so the demo runs
# exactly the SDK code path production uses. Their names say "simulated" wherever they appear.
SIMULATED = {"simulated-openai": "openai", "simulated-anthropic": "anthropic"}
SIMULATED_KEY = "simulated-key-not-secret"
# What the simulated judges charge, so --dry-run, --max-cost and the summary can be tried
# without a key: gpt-4o-mini's and claude-3-5-haiku's prices (workers/data/catalog.toml),
# shown as simulated wherever a simulated judge appears.
SIMULATED_PRICES = {"simulated-openai": (0.15, 0.60), "simulated-anthropic": (0.80, 4.00)}
# Both providers' Batch APIs charge half the synchronous price.
DEFAULT_BATCH_DISCOUNT = 0.5
BATCH_FALLBACKS = ("batch", "online")
# Typo detection (see ModelRegistry.typo_of). difflib's ratio preselects known names that look
# alike; a typo is then at most TYPO_MAX_EDITS changed characters, none of them a digit:
# gpt-4o-mni is a typo of gpt-4o-mini, but gpt-6-turbo (vs gpt-4-turbo) and claude-sonnet-4-6
# (vs -4-5) are new versions, and gpt-4o-mini-2024-07-18 is a dated snapshot of a known name.
TYPO_CUTOFF = 0.8
TYPO_MAX_EDITS = 2
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")


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
    max_tokens: int = DEFAULT_MAX_TOKENS
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
    # Prices in USD per million tokens (synchronous tier); None means unknown, never $0.
    input_price_per_mtok: float | None = None
    output_price_per_mtok: float | None = None
    # Factor the provider's Batch API applies to both prices (None: DEFAULT_BATCH_DISCOUNT).
    batch_discount: float | None = None
    # A cap in USD on what one job may spend on this model (see workers/budget.py).
    max_cost: float | None = None
    # Batch mode (workers/batch/): gather items into provider batches at batch prices.
    batch: bool = False
    # A batch is sent when it holds this many items (None: the provider's limit) or when its
    # first item has waited batch_flush_seconds; open batches are polled every
    # batch_poll_seconds.
    batch_max_requests: int | None = None
    batch_flush_seconds: float = 10.0
    batch_poll_seconds: float = 30.0
    # Items a batch failed transiently: "batch" retries them in a later batch, "online"
    # sends them as synchronous calls.
    batch_fallback: str = "batch"
    # Reasoning models (see ``reasons``): None means decided by the model id's family.
    reasoning: bool | None = None
    # OpenAI reasoning models: "low" | "medium" | "high"; None sends none (the API's default).
    reasoning_effort: str | None = None
    # The completion budget of the one retry of a reply left empty by hidden reasoning
    # (None: see ``retry_max_tokens``).
    reasoning_retry_max_tokens: int | None = None
    # Anthropic extended thinking: budget_tokens sent as thinking={"type": "enabled", ...}.
    thinking_budget: int | None = None

    @property
    def reasons(self) -> bool:
        """Whether the model spends hidden reasoning tokens out of its completion budget:
        OpenAI's reasoning families, or Claude with extended thinking. One place decides
        which parameters a request carries and whether an empty reply is retried."""
        if self.provider == "anthropic":
            return self.thinking_budget is not None
        if self.reasoning is not None:
            return self.reasoning
        return self.model.startswith(REASONING_PREFIXES)

    @property
    def retry_max_tokens(self) -> int:
        """The larger budget of the one retry after a reply empty from reasoning."""
        if self.reasoning_retry_max_tokens is not None:
            return self.reasoning_retry_max_tokens
        return max(REASONING_RETRY_FACTOR * self.max_tokens, REASONING_RETRY_MIN)

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
    "batch_discount": (int, float),
    "max_cost": (int, float),
    "batch": (bool,),
    "batch_max_requests": (int,),
    "batch_flush_seconds": (int, float),
    "batch_poll_seconds": (int, float),
    "batch_fallback": (str,),
    "reasoning": (bool,),
    "reasoning_effort": (str,),
    "reasoning_retry_max_tokens": (int,),
    "thinking_budget": (int,),
}
_POSITIVE = {
    "concurrency",
    "timeout",
    "max_tokens",
    "max_input_chars",
    "rpm",
    "tpm",
    "rps",
    "batch_max_requests",
    "batch_flush_seconds",
    "batch_poll_seconds",
    "reasoning_retry_max_tokens",
    "thinking_budget",
}
_NON_NEGATIVE = {"max_retries", "input_price_per_mtok", "output_price_per_mtok", "max_cost"}
_SPEC_FIELDS = {f.name for f in fields(ModelSpec)}


class ModelRegistry:
    """Resolves model names: models file first, then ``PROVIDER/NAME``, then name prefixes.

    A bare name that is a likely typo of a known one is refused before a job pays for it.
    """

    def __init__(self, defined: Mapping[str, ModelSpec] | None = None, *, source: str = "") -> None:
        self.defined: dict[str, ModelSpec] = dict(defined or {})
        self.source = source
        # typo_of's verdicts: workers resolve the same few names for every task.
        self._typos: dict[str, str | None] = {}

    @classmethod
    def load(cls, path: str | None) -> ModelRegistry:
        """The registry of ``path`` (a TOML models file), or the built-in rules alone."""
        if not path:
            return cls()
        return cls(_read_models_file(Path(path)), source=path)

    def resolve(self, name: str) -> ModelSpec:
        """The spec of ``name``; a likely typo of a known name is refused with a suggestion.

        Known names are the catalog's (``workers/data/catalog.toml``), the models file's and
        the simulated judges'. ``PROVIDER/NAME`` is always taken as typed.
        """
        name = name.strip()
        if not name:
            raise ConfigError("empty model name", source="--model")
        if name in self.defined:
            return self.defined[name]
        if name in SIMULATED:
            price_in, price_out = SIMULATED_PRICES[name]
            return ModelSpec(
                name=name,
                provider=SIMULATED[name],
                model=name,
                simulated=True,
                input_price_per_mtok=price_in,
                output_price_per_mtok=price_out,
                # The simulator finishes a batch in moments: no reason to wait long.
                batch_flush_seconds=1.0,
                batch_poll_seconds=1.0,
            )
        if "/" in name:
            provider, _, model = name.partition("/")
            if provider in PROVIDERS and model:
                return with_catalog_prices(ModelSpec(name=name, provider=provider, model=model))
            raise ConfigError(
                f"unknown provider '{provider}' in model '{name}'; "
                f"use one of {', '.join(PROVIDERS)} (e.g. openai/llama3.1:8b for an "
                "OpenAI-compatible server) or define the model in a models file",
                source="--model",
            )
        by_prefix = provider_by_prefix(name)
        if by_prefix is not None:
            if catalog.lookup(name) is None:
                suggestion = self.typo_of(name)
                if suggestion is not None:
                    raise ConfigError(
                        f"unknown model '{name}': did you mean '{suggestion}'? "
                        f"(to send it as typed, write {by_prefix}/{name})",
                        source="--model",
                    )
            return with_catalog_prices(ModelSpec(name=name, provider=by_prefix, model=name))
        hint = f" (models file: {self.source})" if self.source else ""
        close = _closest(name, self.known_names(), TYPO_CUTOFF)
        guess = f"did you mean '{close}'? Otherwise: " if close else ""
        raise ConfigError(
            f"unknown model '{name}'{hint}: {guess}names starting with gpt-/o1/o3/o4/chatgpt- "
            "go to OpenAI and claude- to Anthropic; write PROVIDER/NAME (e.g. "
            "openai/llama3.1:8b) or define it in a models file (--models-file / "
            "IBT_MODELS_FILE)",
            source="--model",
        )

    def known_names(self) -> list[str]:
        """Names a typo is compared with: the catalog's, the models file's, the simulated."""
        return [*catalog.names(snapshots=True), *self.defined, *SIMULATED]

    def typo_of(self, name: str) -> str | None:
        """The known name ``name`` is most likely a typo of, or None if it looks new.

        A date suffix is set aside first, so a dated snapshot of a known name is accepted and
        a typo in a dated name is suggested with its date. Each known name also stands for
        its base (without date or ``-latest``): claude-3-5-haiku-20241022 is a snapshot of
        claude-3-5-haiku-latest.
        """
        if name not in self._typos:
            self._typos[name] = self._find_typo(name)
        return self._typos[name]

    def _find_typo(self, name: str) -> str | None:
        date = _DATE_SUFFIX.search(name)
        stem = name[: date.start()] if date else name
        bases: dict[str, str] = {}
        for known in self.known_names():
            bases.setdefault(known, known)
            bases.setdefault(_base(known), known)
        if stem in bases:
            return None
        for close in difflib.get_close_matches(stem, bases, n=5, cutoff=TYPO_CUTOFF):
            if _is_typo(stem, close):
                known = bases[close]
                return _base(known) + date.group() if date else known
        return None

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


def provider_by_prefix(name: str) -> str | None:
    """The provider a bare model name's prefix chooses (gpt-* → openai ...), or None."""
    if name.startswith(OPENAI_PREFIXES):
        return "openai"
    if name.startswith(ANTHROPIC_PREFIXES):
        return "anthropic"
    return None


def with_catalog_prices(spec: ModelSpec) -> ModelSpec:
    """``spec`` with the catalog's prices for the prices it does not set itself.

    Only for the provider's own API (no ``base_url``): another server's prices are its own.
    """
    entry = catalog.lookup(spec.model)
    if entry is None or entry.provider != spec.provider or spec.simulated or spec.base_url:
        return spec
    given_in, given_out = spec.input_price_per_mtok, spec.output_price_per_mtok
    return replace(
        spec,
        input_price_per_mtok=entry.input_price_per_mtok if given_in is None else given_in,
        output_price_per_mtok=entry.output_price_per_mtok if given_out is None else given_out,
        batch_discount=entry.batch_discount if spec.batch_discount is None else spec.batch_discount,
    )


def _base(name: str) -> str:
    """``name`` without a date suffix or ``-latest``: what its dated snapshots start with."""
    return _DATE_SUFFIX.sub("", name).removesuffix("-latest")


def _is_typo(typed: str, known: str) -> bool:
    """Whether ``typed`` differs from ``known`` by a few characters, none of them a digit."""
    changed = 0
    matcher = difflib.SequenceMatcher(None, typed, known, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if any(c.isdigit() for c in typed[i1:i2] + known[j1:j2]):
            return False  # another version (gpt-6 vs gpt-5), not a slip of the finger
        changed += max(i2 - i1, j2 - j1)
    return 0 < changed <= TYPO_MAX_EDITS


def _closest(name: str, known: Iterable[str], cutoff: float) -> str | None:
    """The known name most like ``name``, ignoring case; for hints on names we refuse anyway."""
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), by_lower, n=1, cutoff=cutoff)
    return by_lower[close[0]] if close else None


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
        specs[name] = with_catalog_prices(_spec_from_table(name, table, text, source, header))
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
            if key == "batch_discount" and not 0 < value <= 1:
                raise error(key, "must be in (0, 1]: the factor batch prices apply (0.5 = half)")
            if expected == (int, float):
                value = float(value)
        values[key] = value
    provider = values.pop("provider", None)
    if provider is None:
        provider = provider_by_prefix(name)
    if provider is None:
        raise error("provider", f"missing; must be one of {', '.join(PROVIDERS)}")
    if values.get("structured_fallback", "text") not in ("text", "error"):
        raise error("structured_fallback", "must be 'text' or 'error'")
    if values.get("batch_fallback", "batch") not in BATCH_FALLBACKS:
        raise error("batch_fallback", "must be 'batch' or 'online'")
    if provider not in PROVIDERS:
        raise error("provider", f"'{provider}' is not one of {', '.join(PROVIDERS)}")
    if "thinking_budget" in values and "max_tokens" not in values:
        # Anthropic counts thinking inside max_tokens: leave the usual room for the verdict.
        values["max_tokens"] = values["thinking_budget"] + DEFAULT_MAX_TOKENS
    spec = ModelSpec(name=name, provider=provider, model=values.pop("model", name))
    assert set(values) <= _SPEC_FIELDS
    spec = replace(spec, **values)
    problem = _reasoning_problem(spec)
    if problem is not None:
        raise error(*problem)
    return spec


def _reasoning_problem(spec: ModelSpec) -> tuple[str, str] | None:
    """(field, message) of a reasoning setting the model's provider would refuse, or None."""
    if spec.provider == "anthropic":
        for key in ("reasoning", "reasoning_effort"):
            if getattr(spec, key) is not None:
                return key, "OpenAI reasoning models only; for Claude set thinking_budget"
    elif spec.thinking_budget is not None:
        return "thinking_budget", "Anthropic models only; for OpenAI set reasoning_effort"
    effort = spec.reasoning_effort
    if effort is not None and effort not in REASONING_EFFORTS:
        return "reasoning_effort", f"must be one of {', '.join(REASONING_EFFORTS)}, got '{effort}'"
    if effort is not None and not spec.reasons:
        return (
            "reasoning_effort",
            f"model '{spec.model}' is not a reasoning model ({', '.join(REASONING_PREFIXES)}); "
            "set reasoning = true if it is one",
        )
    budget = spec.thinking_budget
    if budget is not None and budget < MIN_THINKING_BUDGET:
        return "thinking_budget", f"must be at least {MIN_THINKING_BUDGET} (Anthropic's minimum)"
    if budget is not None and spec.max_tokens <= budget:
        return (
            "max_tokens",
            f"must exceed thinking_budget ({budget}): Anthropic counts thinking inside max_tokens",
        )
    if spec.reasons and spec.temperature is not None:
        return "temperature", "reasoning models and extended thinking refuse temperature; remove it"
    retry = spec.reasoning_retry_max_tokens
    if retry is not None and not spec.reasons:
        return "reasoning_retry_max_tokens", "only reasoning models are asked again"
    if retry is not None and retry <= spec.max_tokens:
        return "reasoning_retry_max_tokens", f"must exceed max_tokens ({spec.max_tokens})"
    return None
