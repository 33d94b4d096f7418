"""compose.yaml and the Dockerfile, validated without a Docker engine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from producer.cli import build_parser
from workers.models import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
VALIDATOR = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
SECRET_NAMES = ("PASSWORD", "API_KEY", "SECRET", "TOKEN")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def substitute(text: str) -> str:
    """Replace ${VAR...} references with a dummy value, as compose would with a .env."""
    return re.sub(r"\$\{[^}]+\}", "x", text)


def test_compose_is_valid_against_the_compose_spec() -> None:
    done = subprocess.run([*VALIDATOR, str(COMPOSE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_validator_really_checks(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    image: valkey/valkey:8", "    imagee: x", 1))
    done = subprocess.run([*VALIDATOR, str(broken)], capture_output=True, text=True)
    assert done.returncode != 0


def test_redis_is_persistent_private_and_never_evicts() -> None:
    redis = compose()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert "--requirepass ${REDIS_PASSWORD" in command
    assert redis["healthcheck"]["test"]
    assert any(v.startswith("valkey-data:") for v in redis["volumes"])
    assert "valkey-data" in compose()["volumes"]


def test_workers_scale_and_take_keys_from_the_environment() -> None:
    services = compose()["services"]
    workers = {name: s for name, s in services.items() if name.startswith("worker-")}
    assert set(workers) == {"worker-gpt-4o-mini", "worker-claude"}
    for service in workers.values():
        assert "container_name" not in service and "ports" not in service  # --scale works
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        for name, value in service["environment"].items():
            if any(secret in name for secret in SECRET_NAMES):
                assert str(value).startswith("${"), f"{name} must come from the environment"
        assert service["environment"]["IBT_BROKER_URL"].startswith("redis://:${REDIS_PASSWORD")


def test_no_literal_secret_in_compose() -> None:
    """Every value that mentions a secret's name is a ${VAR} reference, never the value."""
    for line in COMPOSE.read_text().splitlines():
        if any(secret in line for secret in SECRET_NAMES) and not line.lstrip().startswith("#"):
            value = re.sub(r"^\s*[A-Z_]+:", "", line)  # the variable's name may say KEY
            without_refs = re.sub(r"\$\{[^}]*\}", "", value)
            assert not any(secret in without_refs for secret in SECRET_NAMES), line


def test_flower_has_basic_auth_and_producer_is_a_profile() -> None:
    services = compose()["services"]
    assert any("--basic-auth=${FLOWER_USER" in part for part in services["flower"]["command"])
    producer = services["producer"]
    assert producer["profiles"] == ["producer"] and producer["restart"] == "no"
    assert "./data:/data" in producer["volumes"]


@pytest.mark.parametrize("service", ["worker-gpt-4o-mini", "worker-claude", "producer"])
def test_every_ibt_command_is_one_our_cli_accepts(service: str) -> None:
    argv = [substitute(part) for part in compose()["services"][service]["command"]]
    assert argv[0] == "ibt"
    args = build_parser().parse_args(argv[1:])  # SystemExit on anything it does not accept
    for name in args.model or []:
        ModelRegistry().resolve(name)


def test_flower_command_options_exist() -> None:
    """Flower's options are tornado options, so ask its registry, not --help."""
    import flower.options  # noqa: F401  (defines them)
    from tornado.options import options

    argv = [substitute(part) for part in compose()["services"]["flower"]["command"]]
    assert argv[:4] == ["celery", "-A", "workers", "flower"]
    for option in argv[4:]:
        assert option.removeprefix("--").split("=")[0] in options._options
    celery = Path(sys.executable).parent / "celery"
    done = subprocess.run(
        [str(celery), "-A", "workers", "flower", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": str(celery.parent), "IBT_BROKER_URL": "redis://127.0.0.1:1/0"},
    )
    assert done.returncode == 0, done.stderr  # our app loads under the plain celery CLI


def test_dockerfile_is_slim_locked_and_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    final = stages[-1]
    assert final.startswith("python:3.11-slim")
    assert "uv sync --locked" in text
    user = re.findall(r"^USER (\S+)", final, flags=re.M)
    assert user and user[-1] not in ("root", "0")
    assert not re.search(r"apt-get|gcc|build-essential", final)
    assert not re.search(r"^(ARG|ENV) .*(API_KEY|PASSWORD)", text, flags=re.M)
