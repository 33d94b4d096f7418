"""Optional packages a worker never uses, kept out of its start-up.

Libraries the worker depends on import some optional packages eagerly whenever they are
installed, and this project installs them for the producer's side:

* ``aiohttp``: the OpenAI and Anthropic SDKs load their aiohttp transport for async clients
  (~0.13 s); workers use the sync clients, over httpx.
* ``yaml``: kombu registers a YAML serializer (~0.02 s); our apps accept JSON only.

Each library guards these imports with ``except ImportError`` and works without them, so a
worker marks them absent before importing any of it: about 0.15 s of every worker's start,
which an embedded one-pair job waits for (bench/README.md, benchmark 7).
"""

from __future__ import annotations

import sys

# Not opentelemetry, though redis-py loads it only if present: the Anthropic SDK needs it.
UNUSED_IN_WORKERS = ("aiohttp", "yaml")


def skip_unused_optional_imports() -> None:
    """Make ``import aiohttp`` (and the others) raise ImportError in this process.

    Only for a process that is about to become a worker: a module already imported is
    left alone, and ``None`` in ``sys.modules`` is Python's documented way to say "absent".
    """
    for name in UNUSED_IN_WORKERS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
