"""Worker presence: which workers are alive and what they serve.

Every worker refreshes its entry in one Redis hash with an expiry time (by Redis' own
clock, so machines' clocks need not agree); a worker that dies stops refreshing it, and
its slots stop counting within `PRESENCE_TTL_SECONDS`. One round trip reads them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from core import redis_keys

PRESENCE_TTL_SECONDS = 10
"""A worker whose entry is older than this counts as gone."""
PRESENCE_REFRESH_SECONDS = 3
"""How often a live worker refreshes its entry."""


@dataclass(frozen=True)
class WorkerSlots:
    name: str
    queues: tuple[str, ...]
    concurrency: int


def _redis_now(client: redis.Redis) -> float:
    seconds, microseconds = client.time()
    return seconds + microseconds / 1e6


def announce(client: redis.Redis, worker: WorkerSlots) -> None:
    body = {
        "queues": list(worker.queues),
        "concurrency": worker.concurrency,
        "expires": _redis_now(client) + PRESENCE_TTL_SECONDS,
    }
    client.hset(redis_keys.WORKERS, worker.name, json.dumps(body))


def withdraw(client: redis.Redis, name: str) -> None:
    client.hdel(redis_keys.WORKERS, name)


def live_workers(client: redis.Redis) -> list[WorkerSlots]:
    # redis-py types a pipeline's commands by their results, not as the pipeline they
    # return, so the commands are queued one by one rather than chained.
    pipeline = client.pipeline()
    pipeline.time()
    pipeline.hgetall(redis_keys.WORKERS)
    (seconds, microseconds), entries = pipeline.execute()
    now = seconds + microseconds / 1e6
    workers, expired = [], []
    for name, raw in entries.items():
        body = json.loads(raw)
        if body["expires"] < now:
            expired.append(name)
            continue
        workers.append(WorkerSlots(name.decode(), tuple(body["queues"]), int(body["concurrency"])))
    if expired:
        client.hdel(redis_keys.WORKERS, *expired)
    return workers
