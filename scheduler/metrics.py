"""Queue metrics in Prometheus' format, read from the database on every scrape.

Redis holds only the messages of jobs about to run (a free slot waits for each), so its
list lengths, which Flower and celery-exporter report, are not the queue: the queue is
the pending jobs in the database. A scrape makes five grouped queries and reads the
workers' presence; nothing is cached or counted in this process, so any number of
`atelier metrics` processes (or schedulers with `--metrics-port`) report the same.

- atelier_jobs{status,queue,kind}: jobs by status (every status, 0 included, for each
  queue and kind that has jobs).
- atelier_pending_jobs{queue}: jobs that would start now if a slot were free: pending,
  past their retry delay (`run_after`), and with no dependency or one that succeeded
  (the scheduler's own test, db.jobs.runnable_jobs). Not paused jobs, not jobs waiting
  for another job or a retry delay: more workers would not start those. (Jobs held back
  only by the owner cap, ATELIER_MAX_RUNNING_PER_OWNER, do count.)
- atelier_worker_slots{queue,state}: `busy` is the queue's queued and running jobs (a
  queued job holds a slot: its message is in Redis for a free worker); `free` is how
  many more of the queue's jobs the scheduler would start now (a worker serving several
  queues is free for each, but counted once against the total).
- atelier_workers{queue}: live workers serving the queue.
- atelier_job_run_seconds{queue,kind,status}: histogram of the ended jobs that started:
  their running time over all attempts (Job.run_seconds; waits between attempts, pauses
  and time in the queue not included).
- atelier_job_failures_total{error_code}: failed jobs by error code.

The queues `gpu` and `cpu`, and every queue of a job or a live worker, always have their
pending, slot and worker series (0 when so), so that a query for a queue with no
workers yet still has a value to scale from.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer
from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from core.broker import redis_client
from core.errors import UserError, detail
from core.outage import Outage
from core.presence import WorkerSlots, live_workers
from core.settings import Settings
from db.engine import UNAVAILABLE, reader_factory, where
from db.jobs import DEPENDENCY, active_counts
from db.models import FINAL_STATUSES, Job, JobStatus, utcnow
from scheduler.capacity import free_slots

log = logging.getLogger("atelier.metrics")

DEFAULT_PORT = 9808
QUEUES = ("gpu", "cpu")
"""The kinds' queues: always reported, so that scaling from zero workers has a value."""
RUN_SECONDS_BUCKETS = (
    1, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800,
)  # fmt: skip
"""Upper bounds of the run-time histogram: from sampling jobs to week-long trainings."""


class MetricsError(UserError):
    """The metrics endpoint cannot be served as asked."""


class QueueCollector:
    """A Prometheus collector whose every `collect` asks the database and Redis."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.readers = reader_factory(settings.database_url)
        self.redis = client or redis_client(settings)
        self.broker = Outage.of("broker", log)

    def collect(self) -> Iterator[Metric]:
        with self.readers() as session:
            by_status = session.execute(
                select(Job.status, Job.queue, Job.kind, func.count()).group_by(
                    Job.status, Job.queue, Job.kind
                )
            ).all()
            pending = _ready_counts(session)
            active = active_counts(session)
            runs = session.execute(self._runs_query()).all()
            failures = session.execute(
                select(Job.error_code, func.count())
                .where(Job.status == JobStatus.FAILED)
                .group_by(Job.error_code)
            ).all()
        workers = self._workers()
        queues = set(QUEUES) | {queue for _, queue, _, _ in by_status}
        queues |= {queue for worker in workers or () for queue in worker.queues}
        yield _jobs(by_status)
        yield _by_queue(
            "atelier_pending_jobs",
            "Jobs that would start now if a worker slot were free (pending, past any "
            "retry delay, dependency succeeded).",
            queues,
            pending,
        )
        if workers is not None:  # Redis unreachable: no slot series rather than wrong ones
            yield _slots(queues, workers, active)
            served = {q: sum(q in w.queues for w in workers) for q in queues}
            yield _by_queue("atelier_workers", "Live workers serving the queue.", queues, served)
        yield _run_seconds(runs)
        counter = CounterMetricFamily(
            "atelier_job_failures", "Failed jobs by error code.", labels=["error_code"]
        )
        for code, count in failures:
            counter.add_metric([code or "unknown"], count)
        yield counter

    def _workers(self) -> list[WorkerSlots] | None:
        try:
            workers = live_workers(self.redis)
        except (redis.RedisError, OSError) as error:
            self.broker.failed(error)
            return None
        self.broker.succeeded()
        return workers

    def _runs_query(self) -> Any:
        seconds = Job.run_seconds
        buckets = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in RUN_SECONDS_BUCKETS]
        return (
            select(Job.queue, Job.kind, Job.status, func.count(), func.sum(seconds), *buckets)
            .where(
                Job.status.in_(FINAL_STATUSES),
                Job.started_at.is_not(None),
                Job.finished_at.is_not(None),
            )
            .group_by(Job.queue, Job.kind, Job.status)
        )


def _ready_counts(session: Session) -> dict[str, int]:
    """Pending jobs that may start now, per queue: db.jobs.runnable_jobs' conditions."""
    dep = DEPENDENCY
    rows = session.execute(
        select(Job.queue, func.count())
        .outerjoin(dep, Job.depends_on == dep.id)
        .where(
            Job.status == JobStatus.PENDING,
            or_(Job.run_after.is_(None), Job.run_after <= utcnow()),
            or_(Job.depends_on.is_(None), dep.status == JobStatus.SUCCEEDED),
        )
        .group_by(Job.queue)
    ).all()
    return {queue: count for queue, count in rows}


def _jobs(rows: Iterable[Any]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(
        "atelier_jobs", "Jobs by status, queue and kind.", labels=["status", "queue", "kind"]
    )
    counts = {(status, queue, kind): count for status, queue, kind, count in rows}
    for queue, kind in sorted({(queue, kind) for _, queue, kind in counts}):
        for status in JobStatus:
            gauge.add_metric([str(status), queue, kind], counts.get((status, queue, kind), 0))
    return gauge


def _by_queue(name: str, help_: str, queues: set[str], counts: dict[str, int]) -> Metric:
    gauge = GaugeMetricFamily(name, help_, labels=["queue"])
    for queue in sorted(queues):
        gauge.add_metric([queue], counts.get(queue, 0))
    return gauge


def _slots(queues: set[str], workers: list[WorkerSlots], active: dict[str, int]) -> Metric:
    total, per_queue = free_slots(workers, active)
    gauge = GaugeMetricFamily(
        "atelier_worker_slots",
        "Worker slots by queue: busy (its queued and running jobs) and free (its jobs "
        "the scheduler would start now).",
        labels=["queue", "state"],
    )
    for queue in sorted(queues):
        gauge.add_metric([queue, "busy"], active.get(queue, 0))
        gauge.add_metric([queue, "free"], max(0, min(per_queue.get(queue, 0), total)))
    return gauge


def _run_seconds(rows: Iterable[Any]) -> Metric:
    histogram = HistogramMetricFamily(
        "atelier_job_run_seconds",
        "Ended jobs' running time over all their attempts.",
        labels=["queue", "kind", "status"],
    )
    for queue, kind, status, count, total, *in_buckets in rows:
        buckets = [
            (str(float(bound)), int(n or 0))
            for bound, n in zip(RUN_SECONDS_BUCKETS, in_buckets, strict=True)
        ]
        buckets.append(("+Inf", int(count)))
        histogram.add_metric([queue, kind, status], buckets, float(total or 0.0))
    return histogram


# --- the endpoint --------------------------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def _app(settings: Settings, registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    """Prometheus' WSGI app; a database outage answers 503 in one line (no traceback)."""
    metrics = make_wsgi_app(registry)
    database = Outage.of(f"database at {where(settings.database_url)}", log)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            answer: Iterable[bytes] = metrics(environ, start_response)
        except UNAVAILABLE as error:
            database.failed(error)
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"database unreachable: {detail(getattr(error, 'orig', error))}\n".encode()]
        database.succeeded()
        return answer

    return app


def serve_metrics(settings: Settings, port: int, address: str = "0.0.0.0") -> WSGIServer:
    """Serve /metrics on `address`:`port` from a daemon thread; `.shutdown()` stops it."""
    registry = CollectorRegistry()
    registry.register(QueueCollector(settings))
    try:
        server = make_server(
            address, port, _app(settings, registry), ThreadingWSGIServer, handler_class=_Quiet
        )
    except OSError as error:
        raise MetricsError(f"cannot serve metrics on {address}:{port}: {detail(error)}") from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", address, server.server_port)
    return server
