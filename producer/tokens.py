"""Token counts for cost estimates: OpenAI's own tokenizer (tiktoken), offline.

tiktoken fetches its encodings from OpenAI's public blob store on first use, which fails on
an air-gapped cluster (and in CI here). The two encodings OpenAI's chat models use ship with
ibt in ``producer/data/tiktoken`` (gzipped, byte-identical: tiktoken checks each file's
SHA-256 against the hash it pins before using it), placed in tiktoken's own cache layout,
so tiktoken itself does the counting.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from workers.settings import get_settings

BUNDLED = Path(__file__).parent / "data" / "tiktoken"
ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
# OpenAI's current chat models (gpt-4o, gpt-4.1, gpt-5, o-series) use o200k_base; a name
# tiktoken does not know yet is counted with it.
DEFAULT_ENCODING = "o200k_base"


@dataclass(frozen=True)
class Counter:
    """Counts tokens of a text; ``method`` says how, for the estimate's table."""

    method: str
    encoding: Any = None  # a tiktoken.Encoding, or None for the characters/4 rule

    @property
    def exact(self) -> bool:
        return self.encoding is not None

    def count(self, text: str) -> int:
        if self.encoding is None:
            return len(text) // 4 + 1
        return len(self.encoding.encode(text, disallowed_special=()))


def encoding_name(model: str) -> str:
    import tiktoken

    try:
        return str(tiktoken.encoding_name_for_model(model))
    except KeyError:
        return DEFAULT_ENCODING


def _cache_dir() -> Path:
    """tiktoken's cache directory, set to ``$IBT_HOME/tiktoken`` unless the user chose one."""
    chosen = os.environ.get("TIKTOKEN_CACHE_DIR")
    if chosen:
        return Path(chosen)
    path = Path(get_settings().home) / "tiktoken"
    os.environ["TIKTOKEN_CACHE_DIR"] = str(path)
    return path


def _place_bundled(name: str) -> None:
    """Put the bundled encoding where tiktoken looks for its download, if it is not there."""
    bundled = BUNDLED / f"{name}.tiktoken.gz"
    if not bundled.is_file():
        return
    url = ENCODING_URL.format(name=name)
    directory = _cache_dir()
    target = directory / hashlib.sha1(url.encode()).hexdigest()
    if target.is_file():
        return
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(gzip.decompress(bundled.read_bytes()))
    partial.replace(target)


@cache
def counter_for(model: str, *, openai: bool) -> Counter:
    """OpenAI models: tiktoken's encoding for ``model``. Others (Claude's tokenizer is not
    published): o200k_base as a stated estimate. Without any encoding: characters / 4."""
    name = encoding_name(model) if openai else DEFAULT_ENCODING
    try:
        import tiktoken

        _place_bundled(name)
        encoding = tiktoken.get_encoding(name)
    except Exception as exc:  # offline without the file, or a corrupt cache
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        return Counter(f"estimate: characters/4 ({name} unavailable: {reason})")
    if openai:
        return Counter(f"tiktoken {name}", encoding)
    return Counter(f"estimate: tiktoken {name} (the provider's tokenizer is not public)", encoding)
