"""The context of one run: the runtime's implementation of the kind contract
(`kinds.contract.JobContext`), which a running job kind talks to. Every write goes
through a lease-guarded database transition (db.jobs); files go to the store
(core.storage) under the run's own folder and count once a row points at them."""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from core.outage import Outage
from core.settings import Settings
from core.storage import Storage, StorageUnavailable, Stored, open_storage
from db import jobs
from db.engine import UNAVAILABLE, where
from db.models import EventType, Output, StopRequest
from kinds.contract import Checkpoint, JobError, OutputData, as_writer
from worker import summaries
from worker.checkpoints import CheckpointStore, load_checkpoint
from worker.model_cache import ProcessModelCache
from worker.summaries import Segment, Summaries

log = logging.getLogger("atelier.run")
T = TypeVar("T")

PROGRESS_WRITE_SECONDS = 0.5
"""Progress reaches the database at most this often; the last report is always written."""
PROGRESS_EVENT_SECONDS = 30.0
"""A progress event joins the job's history at most this often."""
RUN_NAME_CHARS = 8
"""A run's folder is named by the start of its lease token."""
STORAGE_PATIENCE_SECONDS = 120.0
"""How long a run waits out an unreachable store before it fails as storage_unavailable
(retried from the last checkpoint)."""
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PICTURE_ROLES = frozenset({"sample", "snapshot"})
"""Outputs shown in TensorBoard as they are saved: per-epoch samples, render snapshots."""


class StopRequested(Exception):
    def __init__(self, reason: StopRequest) -> None:
        super().__init__(str(reason))
        self.reason = reason


class LeaseLost(Exception):
    """Another worker owns the job now: stop without writing anything."""


class JobCacheView:
    """The process cache as one job sees it, counting its hits and builds."""

    def __init__(self, cache: ProcessModelCache) -> None:
        self._cache = cache
        self.hits = 0
        self.builds = 0

    def get_or_build(self, key: tuple[Hashable, ...], build: Callable[[], Any]) -> Any:
        built = False

        def counted_build() -> Any:
            nonlocal built
            built = True
            return build()

        value = self._cache.get_or_build(key, counted_build)
        if built:
            self.builds += 1
        else:
            self.hits += 1
        return value


@contextmanager
def disk_full_is_a_job_error(what: str) -> Iterator[None]:
    """A write that finds no space fails the job clearly (retrying would not help)."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise JobError(
            "disk_full", f"no space left to write the {what}: {error.strerror}"
        ) from None


class RunContext:
    def __init__(
        self,
        claim: jobs.Claim,
        settings: Settings,
        sessions: sessionmaker[Session],
        cache: ProcessModelCache,
    ) -> None:
        self.job_id = claim.job_id
        self.attempt = claim.attempt
        self.token = claim.token
        self.spec = claim.spec
        self.max_attempts = claim.max_attempts
        self.continues = claim.continues
        self.started = time.monotonic()
        self.time_limit_seconds = claim.time_limit_seconds
        self.time_left_at_start = (
            None if claim.time_limit_seconds is None
            else claim.time_limit_seconds - claim.ran_seconds
        )  # fmt: skip
        self.sessions = sessions
        self.cache = JobCacheView(cache)
        self.cache_dir = settings.cache_dir
        self.store: Storage = open_storage(settings)
        self.job_folder = f"outputs/{claim.job_id}"
        self.run_folder = f"{self.job_folder}/{claim.token[:RUN_NAME_CHARS]}"
        """Every file this run writes is under this key, under a name no other run uses."""
        self.checkpoints = CheckpointStore(self.store, f"{self.run_folder}/checkpoints")
        self.checkpoint_every = int(claim.spec.get("checkpoint_every", 0)) or None
        self.summaries: Summaries | None = None
        """A resumable kind's TensorBoard records not yet published (worker/summaries.py)."""
        if self.checkpoint_every is not None:
            self.summaries = Summaries()
            self.summaries.hparams({"kind": claim.kind, **claim.spec}, trial=claim.job_id)
        self.lease_lost = threading.Event()
        self.lease_valid_until = time.monotonic() + settings.lease_seconds
        """Until when (time.monotonic) the lease may still be ours, as far as this process
        knows: the runtime and the heartbeat move it on with each claim and renewal."""
        self.database = where(settings.database_url)
        self._stop: StopRequest | None = None
        self._pending_progress: dict[str, Any] | None = None
        self._total_steps: int | None = None
        self._reported_step = 0
        self._measured: dict[str, float] = {}
        """The latest value of each metric recorded as an event (fid, val_loss): progress
        reports carry them, so `atelier watch` and Flower show them beside the losses."""
        self._last_progress_write = 0.0
        self._last_progress_event = 0.0
        self.outage = Outage.of(f"database at {self.database}", log)
        """This process' view of the database: its threads log one line per outage."""
        self.store_outage = Outage.of(f"store {self.store.url}", log)
        self._retry_at = 0.0  # no progress write before this, during an outage
        self.on_progress: Callable[[dict[str, Any]], None] | None = None
        """Called with each progress report written (the task adapter shows it in Flower);
        it must not block (the runtime hands it a LiveProgress thread's `offer`)."""

    # --- stop requests ---------------------------------------------------------------

    def request_stop(self, reason: StopRequest) -> None:
        """The first stop asked for wins, except that a person's cancel or pause replaces
        a stop the system asked for (shutdown, preemption, time limit)."""
        by_person = (StopRequest.CANCEL, StopRequest.PAUSE)
        if self._stop is None or (reason in by_person and self._stop not in by_person):
            log.info("job %s: %s requested", self.job_id, reason)
            self._stop = reason

    def ran_seconds(self) -> float:
        """This run's running time so far."""
        return time.monotonic() - self.started

    def _check_time_limit(self) -> None:
        left = self.time_left_at_start
        if left is not None and self.ran_seconds() >= left:
            self.request_stop(StopRequest.TIME_LIMIT)

    def should_stop(self) -> bool:
        self._check_time_limit()
        return self._stop is not None or self.lease_lost.is_set()

    def boundary(self, step: int, snapshot: Callable[[], Checkpoint]) -> None:
        """Checkpoint when due, at the last step (a finished job can be continued from
        it) and on any stop but a cancel; then end the run if a stop was asked for."""
        if self.lease_lost.is_set():
            raise LeaseLost
        self._check_time_limit()
        stop = self._stop
        due = self.checkpoint_every is not None and step % self.checkpoint_every == 0
        last = self._total_steps is not None and step >= self._total_steps
        if due or last or (stop is not None and stop != StopRequest.CANCEL):
            self.save_checkpoint(snapshot())
        if stop is not None:
            raise StopRequested(stop)

    # --- checkpoints -----------------------------------------------------------------

    def restore(self) -> Checkpoint | None:
        """The checkpoint the database names as the job's latest (else the previous);
        with none of its own, a continuation starts from its source job's."""
        checkpoint = self._checkpoint_of(self.job_id)
        source = None
        if checkpoint is None and self.continues is not None:
            source = self.continues
            checkpoint = self._checkpoint_of(source)
            if checkpoint is None:
                raise JobError("checkpoint_missing", f"job {source} has no readable checkpoint")
        self._forget_summaries_after(checkpoint.step if checkpoint is not None else 0)
        if checkpoint is not None:
            step = checkpoint.step
            if not self.write(
                lambda session: jobs.record_resume(session, self.job_id, self.token, step, source)
            ):
                self._lost()
            if source is None and self.summaries is not None:
                self.summaries.clear()  # its hyperparameters are in the job's first segment
            log.info("job %s resumes from step %d%s", self.job_id, step,
                     f" of job {source}" if source else "")  # fmt: skip
        return checkpoint

    def _forget_summaries_after(self, step: int) -> None:
        """Drop the event files of the steps this run logs again (an older checkpoint
        restored when the latest was unreadable: it covered steps past this one)."""
        recorded = self.write(lambda session: jobs.drop_outputs_after(
            session, self.job_id, self.token, summaries.ROLE, step
        ))  # fmt: skip
        if recorded is None:
            self._lost()
        for key in recorded.unreferenced:
            self.forget(key)

    def _checkpoint_of(self, job_id: str) -> Checkpoint | None:
        pointers = self.write(
            lambda session: jobs.outputs_of(session, job_id, jobs.CHECKPOINT_ROLE)
        )
        names = (jobs.LATEST_CHECKPOINT, jobs.PREVIOUS_CHECKPOINT)
        keys = [(pointers[name].key, pointers[name].sha256) for name in names if name in pointers]
        return self.stored("checkpoint", lambda: load_checkpoint(self.store, keys))

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        if self.lease_lost.is_set():
            raise LeaseLost
        what = f"checkpoint of step {checkpoint.step}"
        with disk_full_is_a_job_error(what):
            published = self.stored(what, lambda: self.checkpoints.save(checkpoint))
        row = self._output_row(jobs.CHECKPOINT_ROLE, jobs.LATEST_CHECKPOINT, published)
        row.step = checkpoint.step
        segment, segment_row = self._publish_summaries()
        files = [published] + ([] if segment_row is None else [self._stored_of(segment_row)])

        def record(session: Session) -> jobs.Recorded | None:
            recorded = jobs.record_checkpoint(session, self.job_id, self.token, row)
            if recorded is not None and segment_row is not None:
                jobs.record_output(session, self.job_id, self.token, segment_row)
            return recorded

        try:
            self._commit(files, record, wait=False)
        except UNAVAILABLE as error:  # the job computes on; the next checkpoint tries again
            for file in files:
                self.store.delete(file.key)
            self.outage.failed(error)
            log.info("job %s: checkpoint of step %d not recorded", self.job_id, checkpoint.step)
            return
        if segment is not None and self.summaries is not None:
            self.summaries.published(segment)

    # --- TensorBoard -----------------------------------------------------------------

    def _publish_summaries(self) -> tuple[Segment | None, Output | None]:
        """The held TensorBoard records as an event file in the store, and its row (to be
        recorded with what it belongs to: a checkpoint, the job's final status)."""
        segment = None if self.summaries is None else self.summaries.segment()
        if segment is None:
            return None, None
        what = f"TensorBoard events up to step {segment.last_step}"
        key = f"{self.run_folder}/{summaries.ROLE}/{segment.name}"
        with disk_full_is_a_job_error(what):
            stored = self.stored(what, lambda: self.store.publish(key, as_writer(segment.data)))
        row = self._output_row(summaries.ROLE, segment.name, stored)
        row.step = segment.last_step
        return segment, row

    def final_summaries(self) -> Output | None:
        """What a run that ends its job still holds, published: its row, for the final
        transition's transaction to record (None if nothing is held)."""
        return self._publish_summaries()[1]

    def _summarise_output(self, role: str, name: str, path: Path, step: int | None) -> None:
        if self.summaries is None or role not in PICTURE_ROLES:
            return
        at = step if step is not None else self._reported_step
        if name.endswith(".png"):
            self.summaries.image(role, path.read_bytes(), at)
        elif name.endswith(".txt"):
            self.summaries.text(role, path.read_text(errors="replace"), at)

    # --- progress and metrics --------------------------------------------------------

    def progress(
        self,
        step: int,
        total: int,
        *,
        epoch: int | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        self._total_steps, self._reported_step = total, step
        if self.summaries is not None and metrics:
            self.summaries.scalars(metrics, step, per_step=True)
        self._pending_progress = {
            "step": step,
            "total_steps": total,
            "progress": min(step / total, 1.0) if total else 0.0,
            "epoch": epoch,
            "metrics": {**self._measured, **{k: float(v) for k, v in (metrics or {}).items()}},
        }
        now = time.monotonic()
        ready = now >= self._retry_at or not self.outage.down  # an outage ended: at once
        if now - self._last_progress_write >= PROGRESS_WRITE_SECONDS and ready:
            self.flush()

    def flush(self) -> None:
        """Write the latest progress report, if one is waiting (LeaseLost if refused)."""
        values, self._pending_progress = self._pending_progress, None
        if values is None:
            return
        now = time.monotonic()
        self._last_progress_write = now
        try:
            with self.sessions.begin() as session:
                ours = jobs.record_progress(session, self.job_id, self.token, **values)
                if ours and now - self._last_progress_event >= PROGRESS_EVENT_SECONDS:
                    self._last_progress_event = now
                    jobs.add_event(
                        session, self.job_id, EventType.PROGRESS, values, run_token=self.token
                    )
        except UNAVAILABLE as error:  # progress waits for a later report; the job goes on
            self._pending_progress = self._pending_progress or values
            if self.lease_surely_lost():
                self._lost()
            self._retry_at = time.monotonic() + self.outage.failed(error)
            return
        self.outage.succeeded()
        if not ours:
            self._lost()
        if self.on_progress is not None:
            self.on_progress(values)

    def metrics(
        self,
        values: Mapping[str, float],
        *,
        step: int,
        epoch: int | None = None,
        notes: Mapping[str, str] | None = None,
    ) -> None:
        payload: dict[str, Any] = {"step": step, "epoch": epoch}
        payload.update({k: float(v) for k, v in values.items()})
        if notes:
            payload["notes"] = dict(notes)
        if self.summaries is not None:
            self.summaries.scalars(values, step)
        self._measured.update((name, float(value)) for name, value in values.items())
        if not self.write(
            lambda session: jobs.add_run_event(
                session, self.job_id, self.token, EventType.METRICS, payload
            )
        ):
            self._lost()

    # --- outputs ---------------------------------------------------------------------

    def save_output(
        self,
        role: str,
        name: str,
        data: OutputData,
        *,
        step: int | None = None,
        epoch: int | None = None,
    ) -> Path:
        if self.lease_lost.is_set():
            raise LeaseLost
        for label, value in (("role", role), ("name", name)):
            if not PLAIN_NAME.match(value):
                raise ValueError(f"output {label} {value!r} is not a plain file name")
        what = f"output {role}/{name}"
        key = f"{self.run_folder}/{role}/{name}"
        with disk_full_is_a_job_error(what):
            published = self.stored(what, lambda: self.store.publish(key, as_writer(data)))
        row = self._output_row(role, name, published)  # `name`, whatever name the file got
        row.step, row.epoch = step, epoch
        self._commit([published], lambda session: jobs.record_output(
            session, self.job_id, self.token, row
        ))  # fmt: skip
        path = self.stored(what, lambda: self.store.local_path(published.key))
        self._summarise_output(role, name, path, step)
        return path

    def outputs_of(self, job_id: str, role: str) -> dict[str, Path]:
        """The files of another job's outputs, on this machine (fetched from the store)."""
        stored = self.write(lambda session: jobs.outputs_of(session, job_id, role))
        return {
            name: self.stored(
                f"output {role}/{name} of job {job_id}",
                functools.partial(self.store.local_path, output.key, output.sha256),
            )
            for name, output in stored.items()
        }

    def _output_row(self, role: str, name: str, published: Stored) -> Output:
        return Output(
            job_id=self.job_id,
            role=role,
            name=name,
            key=published.key,
            sha256=published.sha256,
            bytes=published.bytes,
        )

    def stored(self, what: str, call: Callable[[], T]) -> T:
        """`call`, a use of the store, with an unreachable store waited out for up to
        STORAGE_PATIENCE_SECONDS (the lease is kept meanwhile); then the run fails as
        storage_unavailable, to be retried from its last recorded checkpoint."""
        outage, deadline = self.store_outage, time.monotonic() + STORAGE_PATIENCE_SECONDS
        while True:
            if self.lease_lost.is_set():
                raise LeaseLost
            try:
                result = call()
            except StorageUnavailable as error:
                pause = outage.failed(error)
                if time.monotonic() + pause > deadline:
                    raise JobError(
                        "storage_unavailable", f"{what}: {error}", retryable=True
                    ) from None
                time.sleep(pause)
                continue
            outage.succeeded()
            return result

    @staticmethod
    def _stored_of(row: Output) -> Stored:
        return Stored(key=row.key, sha256=row.sha256, bytes=row.bytes)

    def _commit(
        self,
        published: list[Stored],
        record: Callable[[Session], jobs.Recorded | None],
        *,
        wait: bool = True,
    ) -> None:
        """Make published files count by recording them under the lease; a refused record
        takes the files away again (nothing of a run that lost its lease stays), a granted
        one frees the files no row points to any more."""
        recorded = self.write(record, wait=wait)
        if recorded is None:
            for file in published:
                self.forget(file.key)
            self._lost()
        for key in recorded.unreferenced:
            self.forget(key)

    def forget(self, key: str) -> None:
        """Remove a file no row points at; one left behind by an outage is swept later."""
        try:
            self.store.delete(key)
        except StorageUnavailable as error:
            log.info("job %s: %s not removed yet (%s)", self.job_id, key, error)

    def lease_surely_lost(self) -> bool:
        return self.lease_lost.is_set() or time.monotonic() > self.lease_valid_until

    def write(self, change: Callable[[Session], T], *, wait: bool = True) -> T:
        """`change` in one transaction. A database outage is waited out (unless not
        `wait`: then the error is raised) for as long as the lease may still be ours;
        after that the run ends (LeaseLost) without writing."""
        outage = self.outage
        while True:
            try:
                with self.sessions.begin() as session:
                    result = change(session)
            except UNAVAILABLE as error:
                if self.lease_surely_lost():
                    self._lost()
                if not wait:
                    raise
                pause = outage.failed(error)
                time.sleep(min(pause, max(self.lease_valid_until - time.monotonic(), 0.1)))
                continue
            outage.succeeded()
            return result

    def _lost(self) -> NoReturn:
        self.lease_lost.set()
        raise LeaseLost

    def sweep(self) -> int:
        """Remove the files that earlier runs of this job left behind and no row points
        at: temporary files of a run killed while publishing, a file published but never
        recorded (a run killed or taken over in between). Only the lease holder sweeps, so
        no run that could still record a file is swept from under it. Returns how many."""
        referenced = self.write(lambda session: jobs.keys_of(session, self.job_id))
        own = self.run_folder + "/"
        stale = [
            key
            for key in self.stored("sweep", lambda: self.store.keys(self.job_folder))
            if key not in referenced and not key.startswith(own)
        ]
        for key in stale:
            self.forget(key)
        return len(stale)

    def record_cache_use(self, session: Session) -> None:
        if not (self.cache.hits or self.cache.builds):
            return
        payload = {"hits": self.cache.hits, "builds": self.cache.builds, "pid": os.getpid()}
        jobs.add_event(session, self.job_id, EventType.MODEL_CACHE, payload, run_token=self.token)
