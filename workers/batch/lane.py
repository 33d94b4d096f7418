"""A lane: the items of one job and one model on their way through provider batches.

Every item of the lane sits in ``items`` (its task's data) and ``where`` (``pending``, or
the id of the batch that holds it) from the moment its score task buffers it until its
record is written. The scripts below move items atomically and only from where they are,
so a step repeated after a crash never duplicates or drops one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from workers.jobstate import script

PREFIX = "ibt:batch:"
OPEN_STATES = ("creating", "submitted")


def new_batch_id() -> str:
    return uuid.uuid4().hex[:12]


def custom_id(bid: str, cid: str) -> str:
    """What the provider sees: unique per batch, matching Anthropic's ^[a-zA-Z0-9_-]{1,64}$."""
    return f"{bid}-{cid}"


def item_of(custom: str) -> tuple[str, str]:
    bid, _, cid = custom.partition("-")
    return bid, cid


@dataclass(frozen=True)
class Lane:
    job: str
    model: str

    @property
    def base(self) -> str:
        return f"{PREFIX}{self.job}:{self.model}"

    @property
    def items(self) -> str:
        return f"{self.base}:items"

    @property
    def where(self) -> str:
        return f"{self.base}:where"

    @property
    def pending(self) -> str:
        return f"{self.base}:pending"

    @property
    def batches(self) -> str:
        return f"{self.base}:batches"

    @property
    def flush_marker(self) -> str:
        return f"{self.base}:flush"

    def meta(self, bid: str) -> str:
        return f"{self.base}:b:{bid}"

    def ids(self, bid: str) -> str:
        return f"{self.base}:b:{bid}:ids"

    def lock(self, name: str) -> str:
        return f"{self.base}:lock:{name}"

    # ------------------------------------------------------------------ item moves

    def buffer(self, client: redis.Redis, cid: str, item: dict[str, Any], expires: int) -> int:
        """Add an item; the lane's pending count, or -1 if it was already in the lane
        (a redelivered score task)."""
        keys = [self.items, self.where, self.pending]
        args = [cid, json.dumps(item, ensure_ascii=False), expires]
        return int(script(client, "batch_buffer")(keys=keys, args=args))

    def take(
        self, client: redis.Redis, bid: str, *, max_items: int, max_bytes: int, expires: int
    ) -> int:
        """Move up to ``max_items`` pending items (``max_bytes`` of requests) into a new
        batch ``bid`` in state ``creating``; how many moved."""
        keys = [self.pending, self.where, self.items, self.ids(bid), self.meta(bid), self.batches]
        return int(
            script(client, "batch_take")(keys=keys, args=[bid, max_items, max_bytes, expires])
        )

    def release(self, client: redis.Redis, bid: str, cid: str) -> bool:
        """The item's record is written: it leaves the lane (if ``bid`` still holds it)."""
        keys = [self.where, self.items]
        return bool(script(client, "batch_release")(keys=keys, args=[cid, bid]))

    def requeue(self, client: redis.Redis, bid: str, cid: str, item: dict[str, Any]) -> bool:
        """Put an item ``bid`` holds back in pending (for a later batch), with ``item``'s
        new data (e.g. its attempt count)."""
        keys = [self.where, self.pending, self.items]
        args = [cid, bid, json.dumps(item, ensure_ascii=False)]
        return bool(script(client, "batch_requeue")(keys=keys, args=args))

    # ------------------------------------------------------------------ reads

    def held_by(self, client: redis.Redis, bid: str) -> list[tuple[str, dict[str, Any]]]:
        """(cid, item) of every item ``bid`` still holds, in the batch's order."""
        cids: list[str] = client.lrange(self.ids(bid), 0, -1)  # type: ignore[assignment]
        held: list[tuple[str, dict[str, Any]]] = []
        for start in range(0, len(cids), 1000):
            chunk = cids[start : start + 1000]
            with client.pipeline(transaction=False) as pipe:
                pipe.hmget(self.where, chunk)
                pipe.hmget(self.items, chunk)
                where, items = pipe.execute()
            for cid, at, raw in zip(chunk, where, items, strict=True):
                if at == bid and raw is not None:
                    held.append((cid, json.loads(raw)))
        return held

    def pending_items(self, client: redis.Redis) -> list[tuple[str, dict[str, Any]]]:
        cids: list[str] = client.lrange(self.pending, 0, -1)  # type: ignore[assignment]
        if not cids:
            return []
        raws = client.hmget(self.items, cids)
        return [(c, json.loads(r)) for c, r in zip(cids, raws, strict=True) if r is not None]  # type: ignore[arg-type]

    def batch_ids(self, client: redis.Redis) -> list[str]:
        return client.lrange(self.batches, 0, -1)  # type: ignore[return-value]

    def read_meta(self, client: redis.Redis, bid: str) -> dict[str, str]:
        return client.hgetall(self.meta(bid))  # type: ignore[return-value]

    def set_meta(self, client: redis.Redis, bid: str, **fields: Any) -> None:
        client.hset(self.meta(bid), mapping={k: str(v) for k, v in fields.items()})

    def waiting(self, client: redis.Redis) -> int:
        """Items of the lane not yet recorded: pending or inside a provider batch."""
        return int(client.hlen(self.where))  # type: ignore[arg-type]


def model_key(model: str, name: str) -> str:
    """Per-model state shared by every job: open batches, create lock, token-limit wait."""
    return f"{PREFIX}model:{model}:{name}"
