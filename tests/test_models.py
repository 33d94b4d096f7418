"""Model resolution: prefixes, PROVIDER/NAME, models files, typos, the catalog and its prices."""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path

import pytest

from workers import catalog
from workers.errors import ConfigError
from workers.models import PROVIDERS, ModelRegistry, queue_name


@pytest.mark.parametrize(
    ("name", "provider"),
    [
        ("gpt-4o-mini", "openai"),
        ("o1-mini", "openai"),
        ("o3", "openai"),
        ("o4-mini", "openai"),
        ("chatgpt-4o-latest", "openai"),
        ("claude-3-5-haiku-latest", "anthropic"),
        ("openai/llama3.1:8b", "openai"),
        ("anthropic/my-proxy-model", "anthropic"),
    ],
)
def test_builtin_rules(name: str, provider: str) -> None:
    spec = ModelRegistry().resolve(name)
    assert spec.provider == provider
    assert spec.name == name
    assert spec.queue.startswith("ibt.model.")


def test_explicit_provider_strips_prefix_for_the_server() -> None:
    spec = ModelRegistry().resolve("openai/llama3.1:8b")
    assert spec.model == "llama3.1:8b"
    assert spec.queue == "ibt.model.openai_llama3.1_8b"


@pytest.mark.parametrize("name", ["mystery", "gemini-pro", "bard/x", ""])
def test_unknown_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        ModelRegistry().resolve(name)


def test_duplicates_and_queue_collisions_are_refused() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        ModelRegistry().resolve_all(["gpt-4o", "gpt-4o"])
    with pytest.raises(ConfigError, match="same queue"):
        ModelRegistry().resolve_all(["openai/a:b", "openai/a_b"])


def test_models_file(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[models."llama3.1:8b"]\n'
        'provider = "openai"\n'
        'base_url = "http://localhost:11434/v1"\n'
        'api_key_env = "OLLAMA_KEY"\n'
        "concurrency = 8\n"
        "timeout = 120\n"
        "temperature = 0.2\n"
        "rpm = 600\n"
        "structured = true\n"
    )
    spec = ModelRegistry.load(str(path)).resolve("llama3.1:8b")
    assert (spec.provider, spec.model, spec.base_url) == (
        "openai",
        "llama3.1:8b",
        "http://localhost:11434/v1",
    )
    assert (spec.key_env, spec.concurrency, spec.timeout, spec.rpm) == ("OLLAMA_KEY", 8, 120.0, 600)
    assert spec.structured is True
    # built-in rules still apply to names the file does not define
    assert ModelRegistry.load(str(path)).resolve("gpt-4o").provider == "openai"


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ('[models.x]\nprovider = "openai"\nconcurrency = "many"\n', ":3", "must be int"),
        ('[models.x]\nprovider = "openai"\ncolour = 1\n', ":3", "unknown field"),
        ('[models.x]\nprovider = "cohere"\n', ":2", "not one of"),
        ("[models.x]\nconcurrency = 4\n", None, "missing"),
        ('[models.x]\nprovider = "openai"\ntimeout = -1\n', ":3", "positive"),
        ('[models.x]\nprovider = "openai"\nstructured = 1\n', ":3", "must be bool"),
        ("[models.x\n", None, "invalid TOML"),
        ("title = 1\n", None, "models"),
    ],
)
def test_models_file_errors_name_file_line_and_field(
    tmp_path: Path, body: str, where: str | None, message: str
) -> None:
    path = tmp_path / "models.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        ModelRegistry.load(str(path))
    text = str(info.value)
    assert str(path) in text and message in text
    if where:
        assert f"{path}{where}" in text


def test_queue_names_are_redis_safe() -> None:
    assert queue_name("a b/c:d") == "ibt.model.a_b_c_d"


@pytest.mark.parametrize(
    ("typed", "suggestion", "as_typed"),
    [
        ("gpt-4o-mni", "gpt-4o-mini", "openai/gpt-4o-mni"),
        ("o3-mni", "o3-mini", "openai/o3-mni"),
        ("claude-sonet-4-5", "claude-sonnet-4-5", "anthropic/claude-sonet-4-5"),
        ("claude-sonnet-4.5", "claude-sonnet-4-5", "anthropic/claude-sonnet-4.5"),
        ("claude-3-5-haiku-lates", "claude-3-5-haiku-latest", "anthropic/claude-3-5-haiku-lates"),
        ("gpt-4o-mni-2024-07-18", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mni-2024-07-18"),
    ],
)
def test_a_typo_of_a_known_model_is_refused_with_a_suggestion(
    typed: str, suggestion: str, as_typed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        ModelRegistry().resolve(typed)
    assert str(info.value) == (
        f"--model: unknown model '{typed}': did you mean '{suggestion}'? "
        f"(to send it as typed, write {as_typed})"
    )


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o-mini-2024-07-18",
        "gpt-4o-mini-20240718",
        "gpt-4.1-2025-04-14",
        "claude-3-5-haiku-20241022",  # a snapshot of claude-3-5-haiku-latest
        "claude-3-5-sonnet-20240620",
        "claude-sonnet-4-5-20250929",
    ],
)
def test_dated_snapshots_of_known_models_are_accepted(name: str) -> None:
    assert ModelRegistry().resolve(name).model == name


@pytest.mark.parametrize(
    "name",
    [
        # current names
        "gpt-5-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "gpt-4",  # one letter from gpt-4o, but a model of its own
        # names newer than the catalog: another version or a variant, not a typo
        "gpt-6-turbo",
        "gpt-6",
        "gpt-5.2",
        "claude-sonnet-4-6",
        "claude-opus-5",
        "gpt-4o-mini-tts",
        "gpt-5-codex",
        # names the test suite, the benchmarks and compose.yaml use
        "gpt-test",
        "claude-test",
        "gpt-a",
        "claude-b",
        "gpt-faulty",
        "claude-faulty",
        "gpt-spread",
        "gpt-limited",
        "gpt-ratelimited",
        "gpt-paused",
        "gpt-bench",
        "claude-bench",
        "claude-tpm",
    ],
)
def test_known_and_brand_new_names_are_accepted(name: str) -> None:
    assert ModelRegistry().resolve(name).name == name


def test_explicit_provider_sends_any_name_as_typed() -> None:
    spec = ModelRegistry().resolve("openai/gpt-4o-mni")
    assert (spec.provider, spec.model) == ("openai", "gpt-4o-mni")


def test_models_file_names_are_suggested_too(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.llama3]\nprovider = "openai"\nbase_url = "http://localhost:11434/v1"\n'
        '[models."gpt-wrong-key"]\napi_key_env = "OTHER_KEY"\n'
    )
    registry = ModelRegistry.load(str(path))
    with pytest.raises(ConfigError, match="unknown model 'lama3'.*did you mean 'llama3'"):
        registry.resolve("lama3")
    with pytest.raises(ConfigError, match="did you mean 'gpt-wrong-key'"):
        registry.resolve("gpt-wrong-kye")
    with pytest.raises(ConfigError, match="did you mean 'simulated-openai'"):
        ModelRegistry().resolve("simulated-opnai")
    with pytest.raises(ConfigError) as info:
        ModelRegistry().resolve("mystery")
    assert "did you mean" not in str(info.value)


def test_catalog_prices_fill_the_spec() -> None:
    entry = catalog.lookup("gpt-4o-mini")
    assert entry is not None
    for name in ["gpt-4o-mini", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"]:
        spec = ModelRegistry().resolve(name)
        assert (spec.input_price_per_mtok, spec.output_price_per_mtok) == (
            entry.input_price_per_mtok,
            entry.output_price_per_mtok,
        )
    # no price is None, never $0
    for name in ["gpt-6-turbo", "openai/llama3.1:8b"]:
        spec = ModelRegistry().resolve(name)
        assert spec.input_price_per_mtok is None and spec.output_price_per_mtok is None
    # the simulated judges charge a simulated price: gpt-4o-mini's and claude-3-5-haiku's
    for name, real in [
        ("simulated-openai", "gpt-4o-mini"),
        ("simulated-anthropic", "claude-3-5-haiku-latest"),
    ]:
        spec, known = ModelRegistry().resolve(name), catalog.lookup(real)
        assert known is not None
        assert (spec.input_price_per_mtok, spec.output_price_per_mtok) == (
            known.input_price_per_mtok,
            known.output_price_per_mtok,
        )


def test_models_file_prices_win_over_the_catalog(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[models."gpt-4o-mini"]\ninput_price_per_mtok = 0.1\n'
        '[models."local-mini"]\nprovider = "openai"\nmodel = "gpt-4o-mini"\n'
        'base_url = "http://localhost:8000/v1"\n'
    )
    registry = ModelRegistry.load(str(path))
    spec = registry.resolve("gpt-4o-mini")
    assert (spec.input_price_per_mtok, spec.output_price_per_mtok) == (0.1, 0.6)
    # another server's prices are not the provider's
    local = registry.resolve("local-mini")
    assert (local.input_price_per_mtok, local.output_price_per_mtok) == (None, None)


def test_catalog_file_has_a_provider_and_prices_for_every_model() -> None:
    data = tomllib.loads(catalog.CATALOG_FILE.read_text(encoding="utf-8"))
    assert catalog.PRICES_AS_OF == date.fromisoformat(data["prices_as_of"]) <= date.today()
    assert list(data["models"]) == catalog.names()
    for name, table in data["models"].items():
        assert table["provider"] in PROVIDERS, name
        assert table["input_price_per_mtok"] > 0 and table["output_price_per_mtok"] > 0, name
        assert table["batch_discount"] == 0.5, name
    wanted = {
        "openai": ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3"]
        + ["o3-mini", "o4-mini", "gpt-5", "gpt-5-mini", "gpt-5-nano"],
        "anthropic": ["claude-3-5-haiku-latest", "claude-3-5-sonnet-latest"]
        + ["claude-3-7-sonnet-latest", "claude-sonnet-4-0", "claude-opus-4-0"]
        + ["claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1"],
    }
    for provider, names in wanted.items():
        assert set(names) <= set(catalog.names(provider)), provider


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('prices_as_of = "2026-13-01"\n[models.m]\n', "month must be"),
        ('prices_as_of = "20261101"\n[models.m]\n', "YYYY-MM-DD"),
        (
            'prices_as_of = "2026-11-01"\n[models.m]\nprovider = "openai"\n'
            "input_price_per_mtok = 0\noutput_price_per_mtok = 1\nbatch_discount = 0.5\n",
            "positive",
        ),
        (
            'prices_as_of = "2026-11-01"\n[models.m]\nprovider = "openai"\n'
            "input_price_per_mtok = 1\noutput_price_per_mtok = 1\n",
            "batch_discount",
        ),
    ],
)
def test_catalog_errors_name_the_file_and_field(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message) as info:
        catalog.read(path)
    assert str(info.value).startswith(str(path))
