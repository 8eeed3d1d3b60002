"""A worker process: a Celery worker that announces its slots to the scheduler and,
when told to shut down, asks its running jobs to checkpoint and hand themselves back."""

from __future__ import annotations

import importlib
import logging
import socket
import threading
from typing import Any

import redis
from celery.signals import worker_process_init, worker_ready, worker_shutting_down

from core.broker import redis_client, wake_scheduler
from core.errors import one_line
from core.outage import Outage
from core.presence import PRESENCE_REFRESH_SECONDS, WorkerSlots, announce, withdraw
from core.settings import load_settings
from db import jobs
from db.engine import UNAVAILABLE, session_factory
from db.models import StopRequest
from worker.celery_app import app

log = logging.getLogger("atelier.worker")

PRELOAD = ("keras",)
"""Imported by each pool process before it takes a job. Loading TensorFlow holds the GIL
for seconds, which would starve the first job's lease heartbeat; done here, it also
takes the import off the first job's start."""


class Presence(threading.Thread):
    def __init__(self, slots: WorkerSlots) -> None:
        super().__init__(name="atelier-presence", daemon=True)
        self.slots = slots
        self.done = threading.Event()

    def run(self) -> None:
        settings = load_settings()
        broker = Outage.of("broker", log)
        first = True
        while not self.done.is_set():
            try:
                client = redis_client(settings)
                announce(client, self.slots)
                client.close()
                broker.succeeded()
            except (redis.RedisError, OSError) as error:
                broker.failed(error)
            if first:
                wake_scheduler(settings)  # new slots: fill them now, not at the next poll
                first = False
            self.done.wait(PRESENCE_REFRESH_SECONDS)

    def stop(self) -> None:
        self.done.set()
        try:
            withdraw(redis_client(load_settings()), self.slots.name)
        except Exception as error:
            log.warning("could not withdraw worker %s: %s", self.slots.name, error)


def run_worker(name: str, queues: list[str], concurrency: int = 1, loglevel: str = "INFO") -> None:
    nodename = name if "@" in name else f"{name}@{socket.gethostname()}"
    presence = Presence(WorkerSlots(nodename, tuple(queues), concurrency))

    @worker_process_init.connect(weak=False)
    def _preload(**_: Any) -> None:
        for module in PRELOAD:
            importlib.import_module(module)

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        presence.start()

    @worker_shutting_down.connect(weak=False)
    def _shutting_down(**_: Any) -> None:
        presence.stop()
        settings = load_settings()
        try:
            with session_factory(settings.database_url).begin() as session:
                stopped = jobs.request_stop_for_owner(session, nodename, StopRequest.SHUTDOWN)
        except UNAVAILABLE as error:  # its jobs' leases expire instead: they resume elsewhere
            log.warning("could not ask this worker's jobs to checkpoint: %s", one_line(error))
            return
        if stopped:
            log.info("asked jobs %s to checkpoint before shutdown", ", ".join(stopped))

    app.worker_main(
        [
            "worker",
            f"--hostname={nodename}",
            f"--queues={','.join(queues)}",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            f"--loglevel={loglevel}",
            "--task-events",
            "--without-gossip",
            "--without-mingle",
        ]
    )
