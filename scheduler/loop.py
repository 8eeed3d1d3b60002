"""The scheduling loop: the database decides what runs next; Redis only gets jobs that
a free worker slot will start at once.

Each tick: expire dead workers' leases, cancel jobs whose dependency failed, resend
queued jobs whose message seems lost, ask lower-priority jobs to make room for waiting
ones, then fill free worker slots with the best pending jobs (scheduler.policy: priority,
fair share between owners, age). A tick runs every `POLL_SECONDS`, or at once when woken.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from core import redis_keys
from core.celery_app import task_name
from core.errors import one_line
from core.outage import Outage
from core.presence import WorkerSlots, live_workers
from core.settings import Settings
from db import jobs
from db.engine import UNAVAILABLE, reader_factory, where
from db.models import Job, utcnow
from scheduler.capacity import free_slots, queue_sizes
from scheduler.policy import Capacity, choose, preemptions

log = logging.getLogger("atelier.scheduler")

POLL_SECONDS = 1.0
MIN_STALE_QUEUED_SECONDS = 30.0


class BrokerUnavailable(Exception):
    """A message could not be sent (its job went back to pending)."""


@dataclass
class TickReport:
    expired: list[tuple[str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    enqueued: list[str] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        app: Celery,
        client: redis.Redis,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.readers = reader_factory(settings.database_url)
        self.app = app
        self.redis = client
        self.turns: dict[str, int] = {}
        """Fair share's memory: owner -> the number of the last start given to them."""

    def tick(self, maintenance: bool = True) -> TickReport:
        """One round of decisions. Maintenance (leases, orphans, lost messages) can be
        left out of ticks that were only woken to fill a slot: it runs each poll."""
        report = TickReport()
        if maintenance:
            with self.sessions.begin() as session:
                report.expired = jobs.expire_leases(session, utcnow())
            with self.sessions.begin() as session:
                report.cancelled = jobs.cancel_orphans(session)
            report.resent = self._resend_stale()
        workers = live_workers(self.redis)
        if maintenance:
            report.preempted = self._make_room(workers)
        report.enqueued = self._fill_free_slots(workers)
        return report

    def _resend_stale(self) -> list[str]:
        stale_after = max(MIN_STALE_QUEUED_SECONDS, 2 * self.settings.lease_seconds)
        with self.readers() as session:
            stale = jobs.stale_queued(session, utcnow() - timedelta(seconds=stale_after))
        resent = []
        for job in stale:
            with self.sessions.begin() as session:
                if not jobs.touch_queued(session, job.id):
                    continue
            self._send(job)
            resent.append(job.id)
        return resent

    def _fill_free_slots(self, workers: list[WorkerSlots]) -> list[str]:
        if not workers:
            return []
        now = utcnow()
        with self.readers() as session:
            total, per_queue = free_slots(workers, jobs.active_counts(session))
            if total <= 0:
                return []
            candidates = [
                job
                for queue, free in per_queue.items()
                if free > 0
                for job in jobs.runnable_jobs(session, now, queue, min(free, total), per_owner=True)
            ]
            cap = self.settings.max_running_per_owner
            # One owner and no cap: fair share has nothing to weigh (the common case).
            shared = cap is not None or len({job.owner for job in candidates}) > 1
            active = jobs.active_by_owner(session) if shared else {}
        chosen = choose(candidates, Capacity(total, per_queue), active, cap, self.turns)
        return [job.id for job in chosen if self._enqueue(job)]

    def _make_room(self, workers: list[WorkerSlots]) -> list[str]:
        """Preemption: on each queue with no free slot, a waiting job of higher priority
        than a running one asks that one to checkpoint and step aside (it becomes pending
        again without using an attempt, and resumes when a slot frees)."""
        now = utcnow()
        with self.readers() as session:
            total, free = free_slots(workers, jobs.active_counts(session))
            sizes = queue_sizes(workers)
            full = [queue for queue in sizes if min(free[queue], total) <= 0]
            if not full:
                return []
            waiting = [job for q in full for job in jobs.runnable_jobs(session, now, q, sizes[q])]
            if not waiting:
                return []
            running = jobs.running_jobs(session)
            active = jobs.active_by_owner(session)
        cap = self.settings.max_running_per_owner
        if cap is not None:
            waiting = [job for job in waiting if active.get(job.owner, 0) < cap]
        grace = self.settings.preempt_after_seconds
        asked = []
        for preemption in preemptions(waiting, running, now, grace):
            with self.sessions.begin() as session:
                if jobs.request_preemption(session, preemption.victim, preemption.for_job):
                    asked.append(preemption.victim)
        return asked

    def _enqueue(self, job: jobs.Runnable) -> bool:
        with self.sessions.begin() as session:
            if not jobs.mark_queued(session, job.id):
                return False
        try:
            self._send(job)
        except Exception as error:  # kombu's and redis' errors: the job stays pending
            with self.sessions.begin() as session:
                jobs.unmark_queued(session, job.id)
            raise BrokerUnavailable(f"could not send job {job.id}: {one_line(error)}") from None
        return True

    def _send(self, job: Job | jobs.Runnable) -> None:
        self.app.send_task(task_name(job.kind), args=[job.id], queue=job.queue)

    def run(self, stop: threading.Event) -> None:
        """Tick until `stop`; an outage of the database or the broker is waited out, with
        growing pauses and a log line when it starts and when it ends: never an exit."""
        log.info("scheduler running against %s", where(self.settings.database_url))
        # Shared with the notifier's thread: one line per outage for the process.
        database = Outage.of(f"database at {where(self.settings.database_url)}", log)
        broker = Outage.of("broker", log)
        last_maintenance = 0.0
        while not stop.is_set():
            try:
                maintenance = time.monotonic() - last_maintenance >= POLL_SECONDS
                if maintenance:
                    last_maintenance = time.monotonic()
                report = self.tick(maintenance)
                database.succeeded()
                if report.expired or report.cancelled or report.resent or report.preempted:
                    log.info("tick: %s", report)
                self.redis.blpop([redis_keys.WAKE], timeout=POLL_SECONDS)
                broker.succeeded()
            except UNAVAILABLE as error:
                stop.wait(database.failed(error))
            except (BrokerUnavailable, redis.RedisError, OSError) as error:
                stop.wait(broker.failed(error))
