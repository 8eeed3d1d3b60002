"""Every Redis key Atelier uses besides Celery's own queues, in one place, so that the
scheduler, the workers and the tools cannot drift apart."""

from __future__ import annotations

WAKE = "atelier:wake"
"""A list the scheduler blocks on; pushing to it makes the next tick happen now."""
WORKERS = "atelier:workers"
"""A hash: worker name -> JSON with its queues, concurrency and presence expiry."""
GPU_CLAIM = "atelier:gpu:{}"
"""A string per GPU (by UUID) naming the worker supervisor that holds it, with a TTL."""


def gpu_claim(gpu_id: str) -> str:
    return GPU_CLAIM.format(gpu_id)


NOTIFY_CLAIM = "atelier:notify:{}"
"""A lock per job naming the scheduler whose notifier delivers its notices."""


def notify_claim(job_id: str) -> str:
    return NOTIFY_CLAIM.format(job_id)
