"""Cancelling a job's open provider batches from the process that holds the keys."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis

from workers.batch.lane import Lane
from workers.batch.protocol import api_for
from workers.errors import ProviderError
from workers.models import ModelSpec

log = logging.getLogger("ibt.worker")


def cancel_open_batches(client: redis.Redis, job: str, specs: Sequence[ModelSpec]) -> int:
    """Ask the providers to cancel every submitted batch of ``job``; how many were asked.

    Used when the embedded stack shuts down on Ctrl-C, so its workers are gone before they
    could poll: the requests the provider already ran are paid, the rest never run. (On a
    cluster, workers do this at their next poll, woken at once by ``ibt cancel``.)
    """
    asked = 0
    for spec in specs:
        lane = Lane(job, spec.name)
        for bid in lane.batch_ids(client):
            meta = lane.read_meta(client, bid)
            if meta.get("state") != "submitted" or meta.get("cancel_requested"):
                continue
            try:
                api_for(spec).cancel(meta["provider_id"])
            except ProviderError as exc:
                log.warning("could not cancel batch %s: %s", meta["provider_id"], exc)
                continue
            lane.set_meta(client, bid, cancel_requested=time.time())
            asked += 1
    return asked
