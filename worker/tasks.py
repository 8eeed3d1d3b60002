"""One thin Celery task per job kind, named `atelier.<kind>`, taking the job id.

The task only hands the job id to the runtime; all state lives in the database.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from celery import Task

from core.celery_app import task_name
from kinds import kind_modules
from worker.celery_app import app
from worker.runtime import execute


def publish_progress(task: Task, job_id: str, values: dict[str, Any]) -> None:
    """Live progress for Flower: a `task-progress` event. Flower then shows the task in
    state PROGRESS with these values as its result (Flower lists only Celery's own task
    fields, so they travel as `result`); the task's end replaces both."""
    task.send_event("task-progress", retry=False, result={"job_id": job_id, **values})


def _register(kind: str) -> Task:
    @app.task(name=task_name(kind), bind=True)
    def run_job(self: Task, job_id: str) -> str:
        return execute(
            job_id,
            kind,
            owner=self.request.hostname,
            on_progress=partial(publish_progress, self, job_id),
        )

    return run_job


TASKS = {kind: _register(kind) for kind in kind_modules()}
