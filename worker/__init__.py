"""GPU-bound Celery workers: the Celery app, one thin task per job kind, the job runtime."""
