"""Capacity: which workers are alive, what they serve, and how many jobs may start.

Every worker refreshes its entry in one Redis hash with an expiry time (by Redis' own
clock, so machines' clocks need not agree); a worker that dies stops refreshing it, and
its slots stop counting within `PRESENCE_TTL_SECONDS`. One round trip reads them all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from scheduler.broker import WORKERS_KEY

PRESENCE_TTL_SECONDS = 10
PRESENCE_REFRESH_SECONDS = 3


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
    client.hset(WORKERS_KEY, worker.name, json.dumps(body))


def withdraw(client: redis.Redis, name: str) -> None:
    client.hdel(WORKERS_KEY, name)


def live_workers(client: redis.Redis) -> list[WorkerSlots]:
    (seconds, microseconds), entries = client.pipeline().time().hgetall(WORKERS_KEY).execute()
    now = seconds + microseconds / 1e6
    workers, expired = [], []
    for name, raw in entries.items():
        body = json.loads(raw)
        if body["expires"] < now:
            expired.append(name)
            continue
        workers.append(WorkerSlots(name.decode(), tuple(body["queues"]), int(body["concurrency"])))
    if expired:
        client.hdel(WORKERS_KEY, *expired)
    return workers


def free_slots(workers: list[WorkerSlots], active: dict[str, int]) -> tuple[int, dict[str, int]]:
    """Free worker slots in all and per queue, given the queued and running jobs per queue.

    A job starts only where both counts allow it, so no message waits in Redis behind
    a busy worker. Workers serving several queues are counted once in the total.
    """
    total = sum(w.concurrency for w in workers) - sum(active.values())
    per_queue: dict[str, int] = {}
    for worker in workers:
        for queue in worker.queues:
            per_queue[queue] = per_queue.get(queue, 0) + worker.concurrency
    return max(total, 0), {q: n - active.get(q, 0) for q, n in per_queue.items()}
