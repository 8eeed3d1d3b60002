"""The job runtime: claim a job, run its kind with a context, and record how it ended.

A heartbeat thread renews the lease and picks up stop requests; the kind sees them at
its next step boundary, where the context checkpoints and ends the run. Every write
of a run is guarded by its lease token, so a runner that lost its lease changes nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.broker import wake_scheduler
from core.errors import one_line
from core.inputs import resolve_inputs
from core.remote_folders import sync_folder
from core.settings import Settings, load_settings
from db import jobs
from db.engine import UNAVAILABLE, session_factory
from db.models import JobStatus, Output, StopRequest
from kinds import load_kind
from kinds.contract import JobError, is_remote_folder
from worker.live_progress import LiveProgress
from worker.model_cache import PROCESS_CACHE, ProcessModelCache
from worker.run_context import LeaseLost, RunContext, StopRequested

log = logging.getLogger("atelier.runtime")

ContextFactory = Callable[
    [jobs.Claim, Settings, sessionmaker[Session], ProcessModelCache], RunContext
]
"""What builds a run's context: RunContext, or a subclass that takes times (benchmarks)."""

MAX_HEARTBEAT_SECONDS = 2.0
OUT_OF_MEMORY_ERRORS = {"ResourceExhaustedError", "OutOfMemoryError", "MemoryError"}


class Heartbeat(threading.Thread):
    """Renews the lease and relays stop requests to the context until stopped.

    Through a database outage the job goes on computing while the lease may still be
    ours; once it surely has expired, the context is told the lease is lost, and the run
    ends at its next step boundary without writing."""

    def __init__(self, ctx: RunContext, sessions: sessionmaker[Session], lease: float) -> None:
        super().__init__(name=f"heartbeat-{ctx.job_id}", daemon=True)
        self.ctx = ctx
        self.sessions = sessions
        self.lease = lease
        self.interval = min(lease / 3, MAX_HEARTBEAT_SECONDS)
        self.done = threading.Event()

    def run(self) -> None:
        outage = self.ctx.outage
        while not self.done.wait(self.interval):
            asked = time.monotonic()
            try:
                with self.sessions.begin() as session:
                    ours, stop = jobs.renew_lease(
                        session, self.ctx.job_id, self.ctx.token, self.lease
                    )
            except UNAVAILABLE as error:
                outage.failed(error)
                if self.ctx.lease_surely_lost():
                    log.warning("job %s: lease expired during the outage", self.ctx.job_id)
                    self.ctx.lease_lost.set()
                    return
                continue
            outage.succeeded()
            if not ours:
                self.ctx.lease_lost.set()
                return
            self.ctx.lease_valid_until = asked + self.lease
            if stop:
                self.ctx.request_stop(StopRequest(stop))


@dataclass(frozen=True)
class Ending:
    """How a run ended, before it is recorded."""

    status: str  # "succeeded", "failed", or a stop request
    code: str | None = None
    message: str | None = None
    retryable: bool = False


def execute(
    job_id: str,
    kind: str,
    owner: str,
    settings: Settings | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    context: ContextFactory = RunContext,
) -> str:
    """Run one delivery of a job; returns what happened (for logs and Flower).
    `on_progress` receives each progress report written to the database; `context` is
    the class of the run's context (benchmarks pass a subclass that takes times)."""
    settings = settings or load_settings()
    sessions = session_factory(settings.database_url)
    asked = time.monotonic()
    try:
        with sessions.begin() as session:
            claim = jobs.claim(session, job_id, owner, os.getpid(), settings.lease_seconds)
    except UNAVAILABLE as error:  # the job stays queued: the scheduler sends it again
        log.warning("job %s not claimed: database unreachable (%s)", job_id, one_line(error))
        return "database_unavailable"
    if claim is None:
        log.info("job %s is not claimable (ended, running elsewhere, or stopped)", job_id)
        return "skipped"
    if claim.kind != kind:
        log.error("job %s is a %s job delivered as %s", job_id, claim.kind, kind)
    PROCESS_CACHE.max_entries = settings.model_cache_entries
    ctx = context(claim, settings, sessions, PROCESS_CACHE)
    ctx.lease_valid_until = asked + settings.lease_seconds
    live = LiveProgress(on_progress, job_id) if on_progress is not None else None
    if live is not None:
        live.start()
        ctx.on_progress = live.offer
    heartbeat = Heartbeat(ctx, sessions, settings.lease_seconds)
    heartbeat.start()
    try:
        outcome = _run_and_record(ctx, claim.kind, settings)
    finally:
        heartbeat.done.set()
        heartbeat.join()
        if live is not None:
            live.stop()
    wake_scheduler(settings)
    return outcome


def _run_and_record(ctx: RunContext, kind: str, settings: Settings) -> str:
    try:
        ending = _run(ctx, kind, settings)
        ctx.flush()
        events = ctx.final_summaries() if _ends_job(ctx, ending) else None
        outcome = ctx.write(lambda session: _record(session, ctx, settings, ending, events))
        if outcome == "lease_lost" and events is not None:
            ctx.forget(events.key)
        return outcome
    except LeaseLost:
        log.warning("job %s: lease lost; another worker owns it now", ctx.job_id)
        return "lease_lost"


def _run(ctx: RunContext, kind: str, settings: Settings) -> Ending:
    """Run the kind; how it ended (LeaseLost passes through: nothing is to be recorded)."""
    try:
        if swept := ctx.sweep():
            log.info("job %s: removed %d unrecorded files of earlier runs", ctx.job_id, swept)
        module = load_kind(kind)
        fields = getattr(module, "INPUT_FILES", ())
        values = ctx.stored("inputs", lambda: resolve_inputs(ctx.spec, fields, ctx.store))
        values = _synced_folders(ctx, values, getattr(module.Spec, "folder_fields", ()), settings)
        spec = module.Spec.model_validate_json(json.dumps(values))
        module.run(spec, ctx)
    except StopRequested as stop:
        return Ending(str(stop.reason))
    except LeaseLost:
        raise
    except JobError as error:
        return Ending("failed", error.code, error.message, error.retryable)
    except Exception as error:
        if not _still_ours(ctx):  # a stale run meets what the new owner did: not its error
            raise LeaseLost from None
        log.exception("job %s raised", ctx.job_id)
        code, retryable = _classify(error)
        return Ending("failed", code, one_line(error), retryable)
    if ctx.lease_lost.is_set():
        raise LeaseLost
    return Ending("succeeded")


def _synced_folders(
    ctx: RunContext, values: dict[str, Any], fields: tuple[str, ...], settings: Settings
) -> dict[str, Any]:
    """The spec with each object-store folder (a dataset, a corpus) as its copy here."""
    synced = dict(values)
    for field in fields:
        url = values.get(field)
        if isinstance(url, str) and is_remote_folder(url):
            local = ctx.stored(
                f"{field} {url}", functools.partial(sync_folder, url, settings.cache_dir)
            )
            synced[field] = str(local)
    return synced


def _still_ours(ctx: RunContext) -> bool:
    if ctx.lease_lost.is_set():
        return False
    return ctx.write(lambda session: jobs.holds_lease(session, ctx.job_id, ctx.token))


def _ends_job(ctx: RunContext, ending: Ending) -> bool:
    """Whether `ending` leaves the job in a final status (a retry or a release resumes it,
    and the run that resumes logs its steps past the checkpoint again)."""
    if ending.status == "failed":
        return not (ending.retryable and ctx.attempt < ctx.max_attempts)
    return ending.status in ("succeeded", StopRequest.CANCEL, StopRequest.TIME_LIMIT)


def _record(
    session: Session,
    ctx: RunContext,
    settings: Settings,
    ending: Ending,
    events: Output | None = None,
) -> str:
    """The job's transition for `ending`, under the run's lease, with the run's last
    TensorBoard events if it ends the job; "lease_lost" if refused."""
    job_id, token, ran = ctx.job_id, ctx.token, ctx.ran_seconds()
    if events is not None:
        jobs.record_output(session, job_id, token, events)
    if ending.status == "succeeded":
        if not jobs.finish(session, job_id, token, JobStatus.SUCCEEDED, ran=ran):
            return "lease_lost"
        ctx.record_cache_use(session)
        return "succeeded"
    if ending.status == "failed":
        assert ending.code is not None and ending.message is not None
        if ending.retryable and ctx.attempt < ctx.max_attempts:
            delay = timedelta(seconds=settings.retry_backoff_seconds * 2 ** (ctx.attempt - 1))
            ours = jobs.retry_later(
                session, job_id, token, delay, ending.code, ending.message, ran=ran
            )
            return "retry" if ours else "lease_lost"
        ours = jobs.finish(
            session, job_id, token, JobStatus.FAILED,
            error_code=ending.code, error_message=ending.message, ran=ran,
        )  # fmt: skip
        return "failed" if ours else "lease_lost"
    stop = StopRequest(ending.status)
    if stop == StopRequest.CANCEL:
        ours = jobs.finish(session, job_id, token, JobStatus.CANCELLED, ran=ran)
    elif stop == StopRequest.TIME_LIMIT:
        assert ctx.time_limit_seconds is not None
        ours = jobs.finish(
            session, job_id, token, JobStatus.FAILED, error_code=jobs.TIME_LIMIT_CODE,
            error_message=jobs.time_limit_message(ctx.time_limit_seconds), ran=ran,
        )  # fmt: skip
        return "failed" if ours else "lease_lost"
    else:
        ours = jobs.release(session, job_id, token, stop, ran=ran)
    return str(stop) if ours else "lease_lost"


def _classify(error: BaseException) -> tuple[str, bool]:
    """Out of memory will not go away by retrying the same job on the same GPU size."""
    if type(error).__name__ in OUT_OF_MEMORY_ERRORS:
        return "out_of_memory", False
    return "error", True
