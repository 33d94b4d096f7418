"""Celery workers: the app, the score task and the provider clients.

``celery -A workers ...`` finds ``app`` here.
"""

from workers.app import app

__all__ = ["app"]
