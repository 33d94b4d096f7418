"""Celery workers: the app, the score task and the provider clients.

``celery -A workers ...`` finds ``app`` here. It is imported on first use, so a light module
(``workers.errors``, ``workers.settings``) does not bring Celery with it (``ibt --help``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from workers.app import app

        return app
    raise AttributeError(name)
