"""Job state transitions. Each is one conditional UPDATE (or a short transaction), so
concurrent schedulers, workers and CLI calls can race without corrupting a job:
whoever loses a race sees `False`/`None` and does nothing.

A worker's writes are guarded by its lease token: once a lease is lost (expired and
taken by another worker), the old runner can no longer change the job.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    JSON,
    ColumnElement,
    CursorResult,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from db.models import (
    Event,
    EventType,
    Job,
    JobStatus,
    Output,
    StopRequest,
    UTCDateTime,
    utcnow,
)

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
DEPENDENCY = aliased(Job, name="dependency")
"""The job another waits for; built once, as a fresh alias per query defeats SQL caching."""


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


def add_event(
    session: Session,
    job_id: str,
    type_: EventType,
    payload: dict[str, Any],
    run_token: str | None = None,
) -> None:
    """An event; `run_token` names the run it belongs to. A run's own events go through
    `add_run_event`, or follow a lease-guarded transition in the same transaction."""
    values = dict(job_id=job_id, type=type_, payload=payload, at=utcnow(), run_token=run_token)
    session.execute(insert(Event).values(**values))


@dataclass(frozen=True)
class Sharing:
    """How a job shares the pool (scheduler.policy), fixed at submit."""

    owner: str = ""
    preemptible: bool = True
    time_limit_seconds: float | None = None
    sweep_id: str | None = None
    continues: str | None = None
    notify: tuple[str, ...] = ()


def create_job(
    session: Session,
    *,
    kind: str,
    spec: dict[str, Any],
    queue: str,
    priority: int = 0,
    max_attempts: int = 3,
    depends_on: str | None = None,
    sharing: Sharing = Sharing(),
) -> Job:
    job = Job(
        id=new_job_id(),
        kind=kind,
        spec=spec,
        queue=queue,
        status=JobStatus.PENDING,
        priority=priority,
        max_attempts=max_attempts,
        depends_on=depends_on,
        owner=sharing.owner,
        preemptible=sharing.preemptible,
        time_limit_seconds=sharing.time_limit_seconds,
        sweep_id=sharing.sweep_id,
        continues=sharing.continues,
        notify=list(sharing.notify) or None,
    )
    session.add(job)
    session.flush()
    submitted = {"kind": kind, "priority": priority, "owner": sharing.owner}
    add_event(session, job.id, EventType.SUBMITTED, submitted)
    return job


def time_used(job: Job, now: datetime) -> float:
    """Seconds the job has run over all its attempts, the current one's so far included."""
    started = job.attempt_started_at
    if job.status != JobStatus.RUNNING or started is None:
        return job.run_seconds
    return job.run_seconds + max((now - started).total_seconds(), 0.0)


def _set_status(session: Session, job_id: str, where: ColumnElement[bool], **values: Any) -> bool:
    statement = update(Job).where(Job.id == job_id, where).values(updated_at=utcnow(), **values)
    # No ORM session synchronisation: these statements are the only writers of the row.
    # An UPDATE's result is a CursorResult (which has rowcount); Session.execute is typed
    # for every statement as the plain Result.
    return _changed(session.execute(statement.execution_options(synchronize_session=False))) == 1


def _changed(result: Any) -> int:
    """Rows an INSERT, UPDATE or DELETE changed (Session.execute is typed for every
    statement as the plain Result; these return a CursorResult, which has rowcount)."""
    return int(cast(CursorResult[Any], result).rowcount)


# --- the scheduler's transitions -------------------------------------------------------


def expire_leases(session: Session, now: datetime) -> list[tuple[str, str]]:
    """Running jobs whose worker stopped renewing its lease: run again (pending), or
    end them when they were asked to stop or have used every attempt or their time."""
    expired = session.scalars(
        select(Job).where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
    ).all()
    changed = []
    for job in expired:
        ran = _lost_attempt_seconds(job)
        status, code, error = _after_lost_worker(job, job.run_seconds + ran)
        values: dict[str, Any] = {
            "status": status,
            "lease_token": None,
            "lease_expires_at": None,
            "run_seconds": Job.run_seconds + ran,
        }
        if error:
            values |= {"error_code": code, "error_message": error, "finished_at": now}
        if status == JobStatus.PAUSED:
            values["stop_request"] = None
        owned = Job.lease_token == job.lease_token
        if _set_status(session, job.id, and_(Job.status == JobStatus.RUNNING, owned), **values):
            add_event(
                session, job.id, EventType.LEASE_EXPIRED, {"owner": job.lease_owner, "to": status}
            )
            changed.append((job.id, str(status)))
    return changed


def _lost_attempt_seconds(job: Job) -> float:
    """A lost run's running time: from its claim to its last write (its heartbeats')."""
    if job.attempt_started_at is None:
        return 0.0
    return max((job.updated_at - job.attempt_started_at).total_seconds(), 0.0)


def _after_lost_worker(job: Job, used: float) -> tuple[JobStatus, str | None, str | None]:
    if job.stop_request == StopRequest.CANCEL:
        return JobStatus.CANCELLED, None, None
    if job.stop_request == StopRequest.PAUSE:
        return JobStatus.PAUSED, None, None
    if job.time_limit_seconds is not None and used >= job.time_limit_seconds:
        return JobStatus.FAILED, TIME_LIMIT_CODE, time_limit_message(job.time_limit_seconds)
    if job.attempts >= job.max_attempts:
        return JobStatus.FAILED, "worker_lost", f"worker lost on each of {job.attempts} attempts"
    return JobStatus.PENDING, None, None


TIME_LIMIT_CODE = "time_limit"


def time_limit_message(limit: float) -> str:
    return f"ran for its whole time limit of {limit:g} s over all attempts"


def cancel_orphans(session: Session) -> list[str]:
    """Pending jobs whose dependency failed or was cancelled are cancelled, with why."""
    dep = DEPENDENCY
    rows = session.execute(
        select(Job.id, dep.id, dep.status)
        .join(dep, Job.depends_on == dep.id)
        .where(
            Job.status.in_([JobStatus.PENDING, JobStatus.PAUSED]),
            dep.status.in_([JobStatus.FAILED, JobStatus.CANCELLED]),
        )
    ).all()
    cancelled = []
    for job_id, dep_id, dep_status in rows:
        reason = f"dependency {dep_id} {dep_status}"
        if _set_status(
            session,
            job_id,
            Job.status.in_([JobStatus.PENDING, JobStatus.PAUSED]),
            status=JobStatus.CANCELLED,
            error_code="dependency_failed",
            error_message=reason,
            finished_at=utcnow(),
        ):
            add_event(session, job_id, EventType.CANCELLED, {"reason": reason})
            cancelled.append(job_id)
    return cancelled


@dataclass(frozen=True)
class Runnable:
    id: str
    kind: str
    queue: str
    priority: int
    created_at: datetime
    owner: str = ""


def runnable_jobs(
    session: Session, now: datetime, queue: str, limit: int, *, per_owner: bool = False
) -> list[Runnable]:
    """Pending jobs of `queue` that may start now, best first: priority, then age. With
    `per_owner`, the best `limit` of each owner (fair share picks among them)."""
    dep = DEPENDENCY
    rank = func.row_number().over(
        partition_by=Job.owner if per_owner else None,
        order_by=(Job.priority.desc(), Job.created_at, Job.id),
    )
    ranked = (
        select(
            Job.id, Job.kind, Job.queue, Job.priority, Job.created_at, Job.owner, rank.label("rank")
        )
        .outerjoin(dep, Job.depends_on == dep.id)
        .where(
            Job.status == JobStatus.PENDING,
            Job.queue == queue,
            or_(Job.run_after.is_(None), Job.run_after <= now),
            or_(Job.depends_on.is_(None), dep.status == JobStatus.SUCCEEDED),
        )
        .subquery()
    )
    rows = session.execute(
        select(
            *[ranked.c[name] for name in ("id", "kind", "queue", "priority", "created_at", "owner")]
        )
        .where(ranked.c.rank <= limit)
        .order_by(ranked.c.priority.desc(), ranked.c.created_at, ranked.c.id)
    ).all()
    return [Runnable(*row) for row in rows]


def active_counts(session: Session) -> dict[str, int]:
    """Queued and running jobs per queue: the worker slots already spoken for."""
    rows = session.execute(
        select(Job.queue, func.count()).where(Job.status.in_(ACTIVE)).group_by(Job.queue)
    ).all()
    return {queue: count for queue, count in rows}


def active_by_owner(session: Session) -> dict[str, int]:
    """Queued and running jobs per owner: what fair share and the owner cap count."""
    rows = session.execute(
        select(Job.owner, func.count()).where(Job.status.in_(ACTIVE)).group_by(Job.owner)
    ).all()
    return {owner: count for owner, count in rows}


@dataclass(frozen=True)
class Running:
    id: str
    queue: str
    priority: int
    preemptible: bool
    attempt_started_at: datetime | None
    stop_request: str | None


def running_jobs(session: Session) -> list[Running]:
    rows = session.execute(
        select(
            Job.id,
            Job.queue,
            Job.priority,
            Job.preemptible,
            Job.attempt_started_at,
            Job.stop_request,
        ).where(Job.status == JobStatus.RUNNING)
    ).all()
    return [Running(*row) for row in rows]


def request_preemption(session: Session, job_id: str, by: str) -> bool:
    """Ask a running job to checkpoint and give its slot to `by`; False if it has ended
    or another stop was asked for meanwhile."""
    asked = and_(Job.status == JobStatus.RUNNING, Job.stop_request.is_(None))
    if not _set_status(session, job_id, asked, stop_request=StopRequest.PREEMPT):
        return False
    add_event(session, job_id, EventType.PREEMPTED, {"by": by})
    return True


def mark_queued(session: Session, job_id: str) -> bool:
    return _set_status(
        session,
        job_id,
        Job.status == JobStatus.PENDING,
        status=JobStatus.QUEUED,
        queued_at=utcnow(),
    )


def unmark_queued(session: Session, job_id: str) -> bool:
    """Undo `mark_queued` when the message could not be sent."""
    return _set_status(session, job_id, Job.status == JobStatus.QUEUED, status=JobStatus.PENDING)


def stale_queued(session: Session, older_than: datetime) -> Sequence[Job]:
    """Queued jobs no worker has taken for a long time: their message may be lost."""
    return session.scalars(
        select(Job).where(Job.status == JobStatus.QUEUED, Job.queued_at < older_than)
    ).all()


def touch_queued(session: Session, job_id: str) -> bool:
    return _set_status(session, job_id, Job.status == JobStatus.QUEUED, queued_at=utcnow())


# --- the worker's transitions ----------------------------------------------------------


CLAIM = (
    update(Job)
    .where(
        Job.id == bindparam("job_id"),
        or_(
            Job.status == JobStatus.QUEUED,
            and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < bindparam("now")),
        ),
        Job.stop_request.is_(None),
        Job.attempts < Job.max_attempts,
    )
    .values(
        status=JobStatus.RUNNING,
        attempts=Job.attempts + 1,
        lease_token=bindparam("token"),
        lease_owner=bindparam("worker"),
        worker_pid=bindparam("pid"),
        lease_expires_at=bindparam("expires"),
        started_at=func.coalesce(Job.started_at, bindparam("now")),
        attempt_started_at=bindparam("now"),
        updated_at=bindparam("now"),
        error_code=None,
        error_message=None,
    )
    .returning(
        Job.kind,
        Job.spec,
        Job.attempts,
        Job.max_attempts,
        Job.continues,
        Job.run_seconds,
        Job.time_limit_seconds,
    )
    .execution_options(synchronize_session=False)
)
"""Take a job that is queued, or running on an expired lease; built once (it is hot)."""


@dataclass(frozen=True)
class Claim:
    job_id: str
    kind: str
    spec: dict[str, Any]
    token: str
    attempt: int
    max_attempts: int
    continues: str | None = None
    """A finished job whose final checkpoint this one starts from, if it has none."""
    ran_seconds: float = 0.0
    """Running time of the job's earlier attempts."""
    time_limit_seconds: float | None = None


def claim(
    session: Session, job_id: str, owner: str, pid: int, lease_seconds: float
) -> Claim | None:
    """Take a queued job (or one whose lease has expired). None when another worker
    holds a live lease, the job has ended, or it is no longer queued."""
    now = utcnow()
    token = uuid.uuid4().hex
    row = session.execute(
        CLAIM,
        {
            "job_id": job_id,
            "now": now,
            "token": token,
            "worker": owner,
            "pid": pid,
            "expires": now + timedelta(seconds=lease_seconds),
        },
    ).one_or_none()
    if row is None:
        return None
    kind, spec, attempts, max_attempts, continues, ran, limit = row
    started = {"owner": owner, "pid": pid, "attempt": attempts}
    add_event(session, job_id, EventType.STARTED, started, run_token=token)
    return Claim(job_id, kind, dict(spec), token, attempts, max_attempts, continues, ran, limit)


def _owned(token: str) -> ColumnElement[bool]:
    return and_(Job.status == JobStatus.RUNNING, Job.lease_token == token)


def holds_lease(session: Session, job_id: str, token: str) -> bool:
    """Whether the run holding `token` still owns the job."""
    return session.scalar(select(Job.id).where(Job.id == job_id, _owned(token))) is not None


def add_run_event(
    session: Session, job_id: str, token: str, type_: EventType, payload: dict[str, Any]
) -> bool:
    """An event of the run holding `token`, written only while it holds the live lease
    (one INSERT … SELECT … WHERE the job is still its own): False when refused."""
    owner = select(Job.id).where(Job.id == job_id, _owned(token)).exists()
    values = (
        literal(job_id),
        literal(str(type_)),
        literal(payload, JSON()),
        literal(utcnow(), UTCDateTime()),
        literal(token),
    )
    row = select(*values).where(owner)
    columns = [Event.job_id, Event.type, Event.payload, Event.at, Event.run_token]
    # RETURNING says whether a row went in (psycopg reports no rowcount for INSERT … SELECT).
    inserted = session.execute(insert(Event).from_select(columns, row).returning(Event.id))
    return inserted.first() is not None


def renew_lease(
    session: Session, job_id: str, token: str, lease_seconds: float
) -> tuple[bool, str | None]:
    """Extend the lease; returns (still ours, pending stop request)."""
    expires = utcnow() + timedelta(seconds=lease_seconds)
    if not _set_status(session, job_id, _owned(token), lease_expires_at=expires):
        return False, None
    return True, session.scalar(select(Job.stop_request).where(Job.id == job_id))


def record_progress(session: Session, job_id: str, token: str, **values: Any) -> bool:
    return _set_status(session, job_id, _owned(token), **values)


def record_resume(
    session: Session, job_id: str, token: str, step: int, source: str | None = None
) -> bool:
    """The run restored the checkpoint of `step`: its job's own, or `source`'s."""
    if not _set_status(session, job_id, _owned(token), resumed_from_step=step):
        return False
    payload: dict[str, Any] = {"step": step} | ({"from": source} if source else {})
    add_event(session, job_id, EventType.RESUMED, payload, run_token=token)
    return True


CHECKPOINT_ROLE = "checkpoint"
LATEST_CHECKPOINT, PREVIOUS_CHECKPOINT = "latest.npz", "previous.npz"
"""Output names of a job's current checkpoint and the one before it (rows, whose key
points at the file): the pointers a resume trusts, changed only under the lease."""


@dataclass(frozen=True)
class Recorded:
    unreferenced: tuple[str, ...]
    """Keys of files that no row points to any more: the writer removes them."""


def record_output(session: Session, job_id: str, token: str, output: Output) -> Recorded | None:
    """Record an output once: a second save of the same role and name replaces the
    first. None when the lease is not `token`'s any more (nothing is recorded)."""
    if not _set_status(session, job_id, _owned(token)):
        return None
    same = (Output.job_id == job_id, Output.role == output.role, Output.name == output.name)
    replaced = session.scalars(select(Output.key).where(*same)).all()
    session.execute(delete(Output).where(*same))
    session.add(output)
    return Recorded(tuple(key for key in replaced if key != output.key))


def drop_outputs_after(
    session: Session, job_id: str, token: str, role: str, step: int
) -> Recorded | None:
    """Forget the job's outputs of `role` recorded for steps past `step` (the event files
    of steps that a run resuming from `step` logs again). None when the lease is not
    `token`'s."""
    if not _set_status(session, job_id, _owned(token)):
        return None
    past = (Output.job_id == job_id, Output.role == role, Output.step > step)
    keys = session.scalars(select(Output.key).where(*past)).all()
    session.execute(delete(Output).where(*past))
    return Recorded(tuple(keys))


def record_checkpoint(session: Session, job_id: str, token: str, output: Output) -> Recorded | None:
    """Make `output` (role CHECKPOINT_ROLE, name LATEST_CHECKPOINT) the job's latest
    checkpoint; the latest so far becomes the previous one, and the previous one is
    dropped. None when the lease is not `token`'s."""
    if not _set_status(session, job_id, _owned(token)):
        return None
    mine = (Output.job_id == job_id, Output.role == CHECKPOINT_ROLE)
    rows = {row.name: row for row in session.scalars(select(Output).where(*mine)).all()}
    dropped = rows.get(PREVIOUS_CHECKPOINT)
    if dropped is not None:
        session.execute(delete(Output).where(Output.id == dropped.id))
    latest = rows.get(LATEST_CHECKPOINT)
    if latest is not None:
        session.execute(
            update(Output).where(Output.id == latest.id).values(name=PREVIOUS_CHECKPOINT)
        )
    session.add(output)
    return Recorded((dropped.key,) if dropped is not None else ())


def finish(
    session: Session,
    job_id: str,
    token: str,
    status: JobStatus,
    *,
    error_code: str | None = None,
    error_message: str | None = None,
    ran: float = 0.0,
) -> bool:
    """End the run's job with `status`; `ran` is the run's running time in seconds."""
    values: dict[str, Any] = {
        "run_seconds": Job.run_seconds + ran,
        "status": status,
        "lease_token": None,
        "lease_expires_at": None,
        "stop_request": None,
        "finished_at": utcnow(),
        "error_code": error_code,
        "error_message": error_message,
    }
    if status == JobStatus.SUCCEEDED:
        values["progress"] = 1.0
    if not _set_status(session, job_id, _owned(token), **values):
        return False
    ended = {"error_code": error_code, "error": error_message}
    add_event(session, job_id, EventType(status.value), ended, run_token=token)
    return True


def retry_later(
    session: Session,
    job_id: str,
    token: str,
    delay: timedelta,
    error_code: str,
    message: str,
    ran: float = 0.0,
) -> bool:
    """Hand a failed attempt back to the scheduler, to start again after `delay`."""
    if not _set_status(
        session,
        job_id,
        _owned(token),
        run_seconds=Job.run_seconds + ran,
        status=JobStatus.PENDING,
        lease_token=None,
        lease_expires_at=None,
        run_after=utcnow() + delay,
        error_code=error_code,
        error_message=message,
    ):
        return False
    failure = {"error_code": error_code, "error": message}
    add_event(session, job_id, EventType.RETRY, failure, run_token=token)
    return True


def release(session: Session, job_id: str, token: str, stop: StopRequest, ran: float = 0.0) -> bool:
    """A cooperative stop with a checkpoint written. Paused jobs wait for `resume`; a
    worker shutdown or a preemption makes the job pending again. None counts as a failed
    attempt. A cancel or pause asked for while the run stopped for a shutdown or a
    preemption is not lost: it decides where the job goes."""
    if stop.hands_back:
        asked = session.scalar(
            select(Job.stop_request).where(Job.id == job_id, _owned(token)).with_for_update()
        )
        if asked == StopRequest.CANCEL:
            return finish(session, job_id, token, JobStatus.CANCELLED, ran=ran)
        if asked == StopRequest.PAUSE:
            stop = StopRequest.PAUSE
    status = JobStatus.PAUSED if stop == StopRequest.PAUSE else JobStatus.PENDING
    if not _set_status(
        session,
        job_id,
        _owned(token),
        run_seconds=Job.run_seconds + ran,
        status=status,
        attempts=Job.attempts - 1,
        lease_token=None,
        lease_expires_at=None,
        stop_request=None,
    ):
        return False
    released = {"reason": str(stop), "to": str(status)}
    add_event(session, job_id, EventType.RELEASED, released, run_token=token)
    return True


@dataclass(frozen=True)
class StoredOutput:
    key: str
    sha256: str


def outputs_of(session: Session, job_id: str, role: str) -> dict[str, StoredOutput]:
    """Name -> where in the store the outputs of `job_id` under `role` are."""
    rows = session.execute(
        select(Output.name, Output.key, Output.sha256).where(
            Output.job_id == job_id, Output.role == role
        )
    ).all()
    return {name: StoredOutput(key, sha256) for name, key, sha256 in rows}


def keys_of(session: Session, job_id: str) -> set[str]:
    """Every key the rows of `job_id` point to."""
    return set(session.scalars(select(Output.key).where(Output.job_id == job_id)).all())


def request_stop_for_owner(session: Session, owner: str, stop: StopRequest) -> list[str]:
    """Ask every job run by a worker (named `owner`) to stop, e.g. when it shuts down."""
    ids = session.scalars(
        select(Job.id).where(
            Job.status == JobStatus.RUNNING,
            Job.lease_owner == owner,
            Job.stop_request.is_(None),
        )
    ).all()
    for job_id in ids:
        _set_status(session, job_id, Job.stop_request.is_(None), stop_request=stop)
    return list(ids)


# --- the user's transitions ------------------------------------------------------------


def cancel(session: Session, job_id: str) -> str | None:
    """Cancel at once if not running; ask a running job to stop. Returns the outcome."""
    waiting = Job.status.in_([JobStatus.PENDING, JobStatus.QUEUED, JobStatus.PAUSED])
    if _set_status(session, job_id, waiting, status=JobStatus.CANCELLED, finished_at=utcnow()):
        add_event(session, job_id, EventType.CANCELLED, {"reason": "requested"})
        return "cancelled"
    if _set_status(
        session, job_id, Job.status == JobStatus.RUNNING, stop_request=StopRequest.CANCEL
    ):
        return "stopping"
    return None


def pause(session: Session, job_id: str) -> str | None:
    waiting = Job.status.in_([JobStatus.PENDING, JobStatus.QUEUED])
    if _set_status(session, job_id, waiting, status=JobStatus.PAUSED):
        add_event(session, job_id, EventType.PAUSED, {})
        return "paused"
    # A person's pause replaces a hand-back the system asked for (see `release`).
    handed_back = Job.stop_request.in_([StopRequest.PREEMPT, StopRequest.SHUTDOWN])
    stoppable = or_(Job.stop_request.is_(None), handed_back)
    running = and_(Job.status == JobStatus.RUNNING, stoppable)
    if _set_status(session, job_id, running, stop_request=StopRequest.PAUSE):
        return "pausing"
    return None


def resume(session: Session, job_id: str) -> bool:
    if not _set_status(
        session, job_id, Job.status == JobStatus.PAUSED, status=JobStatus.PENDING, run_after=None
    ):
        return False
    add_event(session, job_id, EventType.RESUME_REQUESTED, {})
    return True
