"""Sharing the pool: which pending jobs start in the free slots (priority, then the owner
with the fewest active jobs, then age; an optional cap per owner), and which running job
makes room for a waiting one of higher priority (preemption).

Pure functions over what the scheduler read from the database, so the rules can be
read (and tested) apart from the loop that applies them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from db.jobs import Runnable, Running
from db.models import StopRequest


@dataclass(frozen=True)
class Capacity:
    total: int
    """Free slots over all workers."""
    per_queue: dict[str, int]
    """Free slots of the workers serving each queue."""


def choose(
    candidates: Sequence[Runnable],
    free: Capacity,
    active_by_owner: dict[str, int],
    max_per_owner: int | None,
    turns: dict[str, int] | None = None,
) -> list[Runnable]:
    """The jobs to start now, in order. Among equal priorities the owner with the fewest
    active (queued or running) jobs goes first, counting the ones chosen here; among
    those, the owner whose turn came longest ago (`turns`: owner -> the number of the
    last start the scheduler gave them, updated here), so owners alternate even on one
    slot. An owner at `max_per_owner` waits."""
    left, total = dict(free.per_queue), free.total
    active = dict(active_by_owner)
    turns = {} if turns is None else turns
    waiting = list(candidates)
    chosen: list[Runnable] = []
    while total > 0:
        startable = [
            job
            for job in waiting
            if left.get(job.queue, 0) > 0
            and (max_per_owner is None or active.get(job.owner, 0) < max_per_owner)
        ]
        if not startable:
            break
        job = min(startable, key=lambda j: _rank(j, active, turns))
        waiting.remove(job)
        chosen.append(job)
        left[job.queue] -= 1
        total -= 1
        active[job.owner] = active.get(job.owner, 0) + 1
        turns[job.owner] = max(turns.values(), default=0) + 1
    return chosen


def _rank(job: Runnable, active: dict[str, int], turns: dict[str, int]) -> tuple[object, ...]:
    return (-job.priority, active.get(job.owner, 0), turns.get(job.owner, 0), job.created_at)


@dataclass(frozen=True)
class Preemption:
    victim: str
    """The running job asked to checkpoint and step aside."""
    for_job: str
    """The waiting job that needs its slot."""


def preemptions(
    waiting: Sequence[Runnable],
    running: Sequence[Running],
    now: datetime,
    grace_seconds: float,
) -> list[Preemption]:
    """For each waiting job (best first) that no slot already being freed will serve, the
    running job of its queue to preempt: strictly lower priority, preemptible, running for
    at least `grace_seconds`, the lowest priority first and the most recently started
    among equals."""
    ripe_before = now - timedelta(seconds=grace_seconds)
    found: list[Preemption] = []
    for queue in sorted({job.queue for job in waiting}):
        on_queue = [job for job in running if job.queue == queue]
        freeing = sum(job.stop_request == StopRequest.PREEMPT for job in on_queue)
        candidates = [
            job for job in on_queue
            if job.preemptible and job.stop_request is None
            and job.attempt_started_at is not None and job.attempt_started_at <= ripe_before
        ]  # fmt: skip
        candidates.sort(key=lambda job: (job.priority, -_timestamp(job.attempt_started_at)))
        for job in [w for w in waiting if w.queue == queue][freeing:]:
            if not candidates or candidates[0].priority >= job.priority:
                break  # nothing lower to preempt for it, nor for any job after it
            found.append(Preemption(candidates.pop(0).id, job.id))
    return found


def _timestamp(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0
