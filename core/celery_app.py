"""The Celery app and its settings, chosen for hour-long GPU jobs; the scheduler sends
with it, the workers register their tasks on it (worker/celery_app.py), Flower
watches through it.

The database is the source of truth; Redis only carries "run job X now" messages, so
there is no result backend. Each setting below closes one known trap.
"""

from __future__ import annotations

from celery import Celery

from core.settings import Settings

TASK_PREFIX = "atelier."
"""A job of kind K travels as the task `atelier.K` whose only argument is the job id."""


def task_name(kind: str) -> str:
    return f"{TASK_PREFIX}{kind}"


def make_app(settings: Settings) -> Celery:
    app = Celery("atelier", broker=settings.broker_url)
    app.conf.update(
        # JSON only: a message can never carry code.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        # Ack after the job ends, so a message is not lost with a worker that dies mid-job;
        # a lost child is not re-queued by Celery: the scheduler re-runs the job when its
        # lease expires, and counts the attempt in the database.
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        # Each worker takes one message at a time: no job parked behind a busy worker.
        worker_prefetch_multiplier=1,
        # Redelivery of an unacked message must not start a job that is still running:
        # keep it long; the lease check refuses the rare redelivery anyway.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_seconds},
        broker_connection_retry_on_startup=True,
        # A pool process starts by importing TensorFlow (worker.process.PRELOAD): give it
        # longer than Celery's 4 s before it is declared dead.
        worker_proc_alive_timeout=120,
        # Task events for Flower.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        worker_hijack_root_logger=False,
        task_default_queue="gpu",
    )
    return app
