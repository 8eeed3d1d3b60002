"""One thin Celery task per job kind, named `atelier.<kind>`, taking the job id.

The task only hands the job id to the runtime; all state lives in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task

from core.celery_app import task_name
from kinds import kind_modules
from worker.celery_app import app
from worker.runtime import execute


def progress_publisher(task: Task, job_id: str) -> Callable[[dict[str, Any]], None]:
    """Live progress for Flower: a `task-progress` event. Flower then shows the task in
    state PROGRESS with these values as its result (Flower lists only Celery's own task
    fields, so they travel as `result`); the task's end replaces both. The task's id and
    host are read here, in the task's thread: the events go out from another one."""
    request_id, hostname = task.request.id, task.request.hostname

    def publish(values: dict[str, Any]) -> None:
        with task.app.events.default_dispatcher(hostname=hostname) as dispatcher:
            result = {"job_id": job_id, **values}
            dispatcher.send("task-progress", uuid=request_id, retry=False, result=result)

    return publish


def _register(kind: str) -> Task:
    @app.task(name=task_name(kind), bind=True)
    def run_job(self: Task, job_id: str) -> str:
        return execute(
            job_id,
            kind,
            owner=self.request.hostname,
            on_progress=progress_publisher(self, job_id),
        )

    return run_job


TASKS = {kind: _register(kind) for kind in kind_modules()}
