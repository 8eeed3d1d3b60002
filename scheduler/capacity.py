"""Capacity: which workers are alive, what they serve, and how many jobs may start.

Each worker keeps a short-lived key in Redis; a worker that dies simply stops
refreshing it, and its slots stop counting within `PRESENCE_TTL_SECONDS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from scheduler.broker import WORKER_KEY_PREFIX

PRESENCE_TTL_SECONDS = 10
PRESENCE_REFRESH_SECONDS = 3


@dataclass(frozen=True)
class WorkerSlots:
    name: str
    queues: tuple[str, ...]
    concurrency: int


def announce(client: redis.Redis, worker: WorkerSlots) -> None:
    body = json.dumps({"queues": list(worker.queues), "concurrency": worker.concurrency})
    client.set(WORKER_KEY_PREFIX + worker.name, body, ex=PRESENCE_TTL_SECONDS)


def withdraw(client: redis.Redis, name: str) -> None:
    client.delete(WORKER_KEY_PREFIX + name)


def live_workers(client: redis.Redis) -> list[WorkerSlots]:
    workers = []
    for key in client.scan_iter(match=WORKER_KEY_PREFIX + "*", count=500):
        raw = client.get(key)
        if raw is None:
            continue
        body = json.loads(raw)
        name = key.decode()[len(WORKER_KEY_PREFIX) :]
        workers.append(WorkerSlots(name, tuple(body["queues"]), int(body["concurrency"])))
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
