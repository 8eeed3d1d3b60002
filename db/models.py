"""The tables: jobs (the source of truth for every job), their outputs and their events."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(enum.StrEnum):
    PENDING = "pending"  # accepted; waits for its turn, a dependency, capacity or a retry delay
    QUEUED = "queued"  # a "run job X" message is in Redis for a free worker
    RUNNING = "running"  # a worker holds the lease
    PAUSED = "paused"  # stopped on request with a checkpoint; `resume` makes it pending
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class StopRequest(enum.StrEnum):
    CANCEL = "cancel"
    PAUSE = "pause"
    SHUTDOWN = "shutdown"  # the worker is going away: checkpoint and hand the job back
    PREEMPT = "preempt"  # a job of higher priority needs the slot: checkpoint, back to pending
    TIME_LIMIT = "time_limit"  # its running time is used up: checkpoint, then fail

    @property
    def hands_back(self) -> bool:
        """The job goes back to pending without using an attempt."""
        return self in (StopRequest.SHUTDOWN, StopRequest.PREEMPT)


class EventType(enum.StrEnum):
    """What an entry of a job's history records."""

    SUBMITTED = "submitted"
    STARTED = "started"  # a worker claimed the job (one per attempt)
    PROGRESS = "progress"  # a progress report, at most every PROGRESS_EVENT_SECONDS
    METRICS = "metrics"  # a kind's metrics, e.g. per-epoch means
    RESUMED = "resumed"  # a run restored a checkpoint
    MODEL_CACHE = "model_cache"  # what a run found in and added to its worker's cache
    LEASE_EXPIRED = "lease_expired"
    RETRY = "retry"  # a failed attempt waits for its next one
    RELEASED = "released"  # a cooperative stop (pause, shutdown, preemption) with a checkpoint
    PREEMPTED = "preempted"  # asked to give its slot to a job of higher priority
    TIME_LIMIT = "time_limit"  # asked to stop: its running time is used up
    NOTIFIED = "notified"  # a notification of its final status was delivered, or given up
    PAUSED = "paused"
    RESUME_REQUESTED = "resume_requested"
    CANCELLED = "cancelled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored as UTC; SQLite drops the zone, so put it back on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None and value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


NOTICE_DUE = text("notify IS NOT NULL AND notified_at IS NULL")
"""Jobs whose notifications are still to send (a partial index: the notifier polls it)."""


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    queue: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    depends_on: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    run_after: Mapped[datetime | None] = mapped_column(default=None)

    # Sharing the pool (scheduler.policy): who it is for and what it may use.
    owner: Mapped[str] = mapped_column(String(255), default="", server_default="")
    preemptible: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    time_limit_seconds: Mapped[float | None] = mapped_column(Float, default=None)
    run_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    """Running time of its ended attempts (the current one's runs from attempt_started_at)."""
    attempt_started_at: Mapped[datetime | None] = mapped_column(default=None)
    sweep_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    continues: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    """A finished training job whose final checkpoint this one starts from."""
    notify: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True), default=None)
    notified_at: Mapped[datetime | None] = mapped_column(default=None)

    # Progress, as last reported by the running job.
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int | None] = mapped_column(Integer, default=None)
    total_steps: Mapped[int | None] = mapped_column(Integer, default=None)
    epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    resumed_from_step: Mapped[int | None] = mapped_column(Integer, default=None)

    # The lease: who runs the job and until when it counts as alive.
    lease_token: Mapped[str | None] = mapped_column(String(32), default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(255), default=None)
    worker_pid: Mapped[int | None] = mapped_column(Integer, default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    stop_request: Mapped[str | None] = mapped_column(String(16), default=None)

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (
        Index("ix_jobs_status_priority", "status", "priority", "created_at"),
        Index("ix_jobs_owner_status", "owner", "status"),
        Index(
            "ix_jobs_notice_due",
            "finished_at",
            postgresql_where=NOTICE_DUE,
            sqlite_where=NOTICE_DUE,
        ),
    )


class Output(Base):
    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(Text)
    """Where the file is in the store, relative to it (core.storage)."""
    step: Mapped[int | None] = mapped_column(Integer, default=None)
    epoch: Mapped[int | None] = mapped_column(Integer, default=None)
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ux_outputs_job_role_name", "job_id", "role", "name", unique=True),)


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    run_token: Mapped[str | None] = mapped_column(String(32), default=None)
    """The lease token of the run that wrote it (None: not written by a run)."""
