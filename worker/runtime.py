"""The job runtime: claim a job, run its kind with a context, and record how it ended.

A heartbeat thread renews the lease and picks up stop requests; the kind sees them at
its next step boundary, where the context checkpoints and ends the run. Every write
of a run is guarded by its lease token, so a runner that lost its lease changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import timedelta
from types import ModuleType
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.broker import wake_scheduler
from core.errors import one_line
from core.inputs import resolve_inputs
from core.settings import Settings, load_settings
from db import jobs
from db.engine import session_factory
from db.models import JobStatus, StopRequest
from kinds import load_kind
from kinds.contract import JobError
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
    """Renews the lease and relays stop requests to the context until stopped."""

    def __init__(self, ctx: RunContext, sessions: sessionmaker[Session], lease: float) -> None:
        super().__init__(name=f"heartbeat-{ctx.job_id}", daemon=True)
        self.ctx = ctx
        self.sessions = sessions
        self.lease = lease
        self.interval = min(lease / 3, MAX_HEARTBEAT_SECONDS)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                with self.sessions.begin() as session:
                    ours, stop = jobs.renew_lease(
                        session, self.ctx.job_id, self.ctx.token, self.lease
                    )
            except Exception:
                log.exception("lease renewal of job %s failed; trying again", self.ctx.job_id)
                continue
            if not ours:
                self.ctx.lease_lost.set()
                return
            if stop:
                self.ctx.request_stop(StopRequest(stop))


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
    with sessions.begin() as session:
        claim = jobs.claim(session, job_id, owner, os.getpid(), settings.lease_seconds)
    if claim is None:
        log.info("job %s is not claimable (ended, running elsewhere, or stopped)", job_id)
        return "skipped"
    if claim.kind != kind:
        log.error("job %s is a %s job delivered as %s", job_id, claim.kind, kind)
    PROCESS_CACHE.max_entries = settings.model_cache_entries
    ctx = context(claim, settings, sessions, PROCESS_CACHE)
    ctx.on_progress = on_progress
    if swept := ctx.sweep():
        log.info("job %s: removed %d temporary files of earlier runs", job_id, swept)
    heartbeat = Heartbeat(ctx, sessions, settings.lease_seconds)
    heartbeat.start()
    try:
        outcome = _run_and_record(ctx, claim.kind, settings)
    finally:
        heartbeat.done.set()
        heartbeat.join()
    wake_scheduler(settings)
    return outcome


def _run_and_record(ctx: RunContext, kind: str, settings: Settings) -> str:
    try:
        module = load_kind(kind)
        values = resolve_inputs(ctx.spec, getattr(module, "INPUT_FILES", ()), settings.home)
        spec = module.Spec.model_validate_json(json.dumps(values))
        _run(module, spec, ctx)
    except StopRequested as stop:
        return _stopped(ctx, stop.reason)
    except LeaseLost:
        log.warning("job %s: lease lost; another worker owns it now", ctx.job_id)
        return "lease_lost"
    except JobError as error:
        return _failed(ctx, settings, error.code, error.message, error.retryable)
    except Exception as error:
        log.exception("job %s raised", ctx.job_id)
        code, retryable = _classify(error)
        return _failed(ctx, settings, code, one_line(error), retryable)
    ctx.flush()
    with ctx.sessions.begin() as session:
        if not jobs.finish(session, ctx.job_id, ctx.token, JobStatus.SUCCEEDED):
            return "lease_lost"
        ctx.record_cache_use(session)
    return "succeeded"


def _run(module: ModuleType, spec: object, ctx: RunContext) -> None:
    module.run(spec, ctx)
    if ctx.lease_lost.is_set():
        raise LeaseLost


def _stopped(ctx: RunContext, reason: StopRequest) -> str:
    ctx.flush()
    with ctx.sessions.begin() as session:
        if reason == StopRequest.CANCEL:
            jobs.finish(session, ctx.job_id, ctx.token, JobStatus.CANCELLED)
        else:
            jobs.release(session, ctx.job_id, ctx.token, reason)
    return str(reason)


def _failed(ctx: RunContext, settings: Settings, code: str, message: str, retryable: bool) -> str:
    ctx.flush()
    with ctx.sessions.begin() as session:
        if retryable and ctx.attempt < ctx.max_attempts:
            delay = settings.retry_backoff_seconds * 2 ** (ctx.attempt - 1)
            jobs.retry_later(
                session, ctx.job_id, ctx.token, timedelta(seconds=delay), code, message
            )
            return "retry"
        jobs.finish(
            session,
            ctx.job_id,
            ctx.token,
            JobStatus.FAILED,
            error_code=code,
            error_message=message,
        )
    return "failed"


def _classify(error: BaseException) -> tuple[str, bool]:
    """Out of memory will not go away by retrying the same job on the same GPU size."""
    if type(error).__name__ in OUT_OF_MEMORY_ERRORS:
        return "out_of_memory", False
    return "error", True
