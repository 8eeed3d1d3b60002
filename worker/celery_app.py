"""The worker's Celery app: Atelier's Celery settings (core.celery_app) with one task per
job kind (worker.tasks)."""

from __future__ import annotations

from core.celery_app import make_app
from core.settings import load_settings

app = make_app(load_settings())
app.conf.include = ["worker.tasks"]
