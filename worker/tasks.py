"""One thin Celery task per job kind, named `atelier.<kind>`, taking the job id.

The task only hands the job id to the runtime; all state lives in the database.
"""

from __future__ import annotations

from celery import Task

from worker.celery_app import app
from worker.jobs import kind_modules
from worker.runtime import execute


def _register(kind: str) -> Task:
    @app.task(name=f"atelier.{kind}", bind=True)
    def run_job(self: Task, job_id: str) -> str:
        return execute(job_id, kind, owner=self.request.hostname)

    return run_job


TASKS = {kind: _register(kind) for kind in kind_modules()}
