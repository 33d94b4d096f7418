"""Model resolution: prefixes, PROVIDER/NAME, models files and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.errors import ConfigError
from workers.models import ModelRegistry, queue_name


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
