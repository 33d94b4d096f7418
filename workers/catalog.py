"""The built-in catalog of known judge models and their prices, read once from data/catalog.toml.

Knowing the providers' current names lets ``ModelRegistry`` tell a typo from a new model; the
prices feed cost estimates. A model missing here has no price, never a price of $0.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from workers.errors import ConfigError

CATALOG_FILE = Path(__file__).parent / "data" / "catalog.toml"
_PRICE_KEYS = ("input_price_per_mtok", "output_price_per_mtok")
_KEYS = {"provider", *_PRICE_KEYS, "batch_discount", "snapshots"}


@dataclass(frozen=True)
class CatalogEntry:
    """One known model: its provider and prices in USD per million tokens (synchronous tier).

    ``batch_discount`` multiplies both prices on the providers' Batch APIs (0.5 = half price);
    ``snapshots`` are dated ids the provider bills like ``name``.
    """

    name: str
    provider: str
    input_price_per_mtok: float
    output_price_per_mtok: float
    batch_discount: float
    snapshots: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    """A parsed catalog file: the date its prices were checked and its entries in file order."""

    prices_as_of: date
    entries: tuple[CatalogEntry, ...]


def read(path: Path = CATALOG_FILE) -> Catalog:
    """Parse and check a catalog file; errors name the file and the offending field."""
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read model catalog: {exc}", source=source) from exc
    as_of = data.get("prices_as_of")
    # fromisoformat alone would also take 20261125; the file promises YYYY-MM-DD.
    if not isinstance(as_of, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", as_of):
        raise ConfigError("must be a YYYY-MM-DD string", source=source, field="prices_as_of")
    try:
        prices_as_of = date.fromisoformat(as_of)
    except ValueError as exc:
        raise ConfigError(str(exc), source=source, field="prices_as_of") from exc
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigError('expected a [models."NAME"] table per model', source=source)
    entries = tuple(_entry(name, table, source) for name, table in models.items())
    seen: set[str] = set()
    for entry in entries:
        for name in (entry.name, *entry.snapshots):
            if name in seen:
                raise ConfigError(f"'{name}' listed twice", source=source, field=entry.name)
            seen.add(name)
    return Catalog(prices_as_of, entries)


def _entry(name: str, table: Any, source: str) -> CatalogEntry:
    def error(key: str, message: str) -> ConfigError:
        return ConfigError(message, source=source, field=f"models.{name}.{key}")

    if not isinstance(table, dict):
        raise ConfigError("must be a table", source=source, field=f"models.{name}")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise error(unknown[0], f"unknown field; known fields: {', '.join(sorted(_KEYS))}")
    provider = table.get("provider")
    if not isinstance(provider, str) or not provider:
        raise error("provider", "missing or not a string")
    prices: list[float] = []
    for key in _PRICE_KEYS:
        value = table.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise error(key, "must be a positive number (leave out a model without a price)")
        prices.append(float(value))
    discount = table.get("batch_discount")
    if isinstance(discount, bool) or not isinstance(discount, int | float) or not 0 < discount <= 1:
        raise error("batch_discount", "must be a number in (0, 1]")
    snapshots = table.get("snapshots", [])
    if not isinstance(snapshots, list) or not all(isinstance(s, str) for s in snapshots):
        raise error("snapshots", "must be a list of model ids")
    return CatalogEntry(name, provider, prices[0], prices[1], float(discount), tuple(snapshots))


_CATALOG = read()
_BY_ID = {name: e for e in _CATALOG.entries for name in (e.name, *e.snapshots)}
PRICES_AS_OF: date = _CATALOG.prices_as_of


def lookup(name: str) -> CatalogEntry | None:
    """The entry of a catalog name or one of its listed snapshots; None for any other name."""
    return _BY_ID.get(name)


def names(provider: str | None = None, *, snapshots: bool = False) -> list[str]:
    """Catalog names in file order, of one provider if given; with their dated ids if asked."""
    return [
        name
        for e in _CATALOG.entries
        if provider is None or e.provider == provider
        for name in (e.name, *(e.snapshots if snapshots else ()))
    ]
