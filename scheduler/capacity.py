"""Capacity: how many jobs may start, from the live workers' slots and the active jobs."""

from __future__ import annotations

from core.presence import WorkerSlots


def free_slots(workers: list[WorkerSlots], active: dict[str, int]) -> tuple[int, dict[str, int]]:
    """Free worker slots in all and per queue, given the queued and running jobs per queue.

    A job starts only where both counts allow it, so no message waits in Redis behind
    a busy worker. Workers serving several queues are counted once in the total.
    """
    total = sum(w.concurrency for w in workers) - sum(active.values())
    sizes = queue_sizes(workers)
    return max(total, 0), {q: n - active.get(q, 0) for q, n in sizes.items()}


def queue_sizes(workers: list[WorkerSlots]) -> dict[str, int]:
    """All slots (busy or not) of the workers serving each queue."""
    sizes: dict[str, int] = {}
    for worker in workers:
        for queue in worker.queues:
            sizes[queue] = sizes.get(queue, 0) + worker.concurrency
    return sizes
