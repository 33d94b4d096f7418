"""Celery workers: the app, the score task and the provider clients."""
