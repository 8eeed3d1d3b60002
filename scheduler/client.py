"""The Python client API: submit jobs and look at them. The CLI is a thin layer on this."""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.broker import wake_scheduler
from core.errors import UserError
from core.inputs import resolve_inputs, store_inputs
from core.remote_folders import list_folder
from core.settings import Settings, load_settings
from core.storage import Storage, open_storage
from db import jobs
from db.engine import reader_factory, session_factory
from db.jobs import time_used
from db.migrate import ensure_current
from db.models import Event, EventType, Job, JobStatus, Output, utcnow
from kinds.contract import RemoteFile, Submission
from scheduler.continuation import check_changes, check_source
from scheduler.owners import default_owner
from scheduler.specs import SpecError, ValidSpec, input_fields, is_checkpointed, validate_spec
from scheduler.webhooks import check_webhook_url

DEFAULT_MAX_ATTEMPTS = 3


class JobNotFound(UserError, LookupError):
    """No job has this id or id prefix."""


class WaitTimedOut(UserError, TimeoutError):
    """A job did not end within the time a caller was willing to wait."""


class SweepNotFound(UserError, LookupError):
    """No sweep has this id or id prefix."""


@dataclass(frozen=True)
class OutputView:
    id: int
    """A model output's id names its job in a sampler's `model` field."""
    role: str
    name: str
    key: str
    """Where the file is in the store, relative to it."""
    location: str
    """Where a person opens it: a local path, or an s3:// URL."""
    step: int | None
    epoch: int | None
    sha256: str
    bytes: int


@dataclass(frozen=True)
class JobView:
    id: str
    kind: str
    status: str
    queue: str
    priority: int
    attempts: int
    max_attempts: int
    progress: float
    step: int | None
    total_steps: int | None
    epoch: int | None
    metrics: dict[str, float]
    resumed_from_step: int | None
    worker: str | None
    worker_pid: int | None
    depends_on: str | None
    error_code: str | None
    error_message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    spec: dict[str, Any]
    outputs: list[OutputView]
    owner: str
    preemptible: bool
    time_limit_seconds: float | None
    time_used_seconds: float
    """Running time over all attempts, the current one's included."""
    sweep_id: str | None
    continues: str | None

    @property
    def final(self) -> bool:
        return JobStatus(self.status).final

    def as_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "outputs"}
        for key in ("created_at", "started_at", "finished_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data["outputs"] = [o.__dict__ for o in self.outputs]
        return data


class Client:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        ensure_current(self.settings.database_url)
        self.sessions = session_factory(self.settings.database_url)
        self.readers = reader_factory(self.settings.database_url)
        self.store: Storage = open_storage(self.settings)

    def submit(
        self,
        kind: str,
        spec: dict[str, Any] | None = None,
        *,
        priority: int = 0,
        after: str | None = None,
        queue: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        owner: str | None = None,
        preempt: bool = True,
        time_limit: float | None = None,
        notify: Sequence[str] = (),
        continues: str | None = None,
        sweep_id: str | None = None,
    ) -> str:
        """Validate and queue a job; its id. `owner` defaults to the OS user; `preempt`
        False keeps a checkpointing job from being preempted (other kinds never are);
        `time_limit` is seconds of running time over all attempts; `notify` URLs get a
        signed POST when it ends; `continues` names a finished job of the same kind whose
        final checkpoint it starts from."""
        if max_attempts < 1:
            raise SpecError(f"max attempts must be at least 1, got {max_attempts}")
        if time_limit is not None and not time_limit > 0:
            raise SpecError(f"a time limit must be positive, got {time_limit:g} s")
        urls = tuple(check_webhook_url(url, self.settings) for url in notify)
        given = dict(spec or {})
        source = self._source(kind, continues) if continues else None
        submission = Submission(outputs_of=self._outputs_named, list_folder=self._list_folder)
        valid = validate_spec(kind, self._continued_spec(kind, source, given), submission)
        if source is not None:
            check_changes(valid, source, given, valid.input_files)
        with self.readers() as session:
            values, waits_for = self._link_models(session, kind, valid)
            if after:
                waits_for.add(self._dependency(session, after))
        if len(waits_for) > 1:
            raise SpecError(f"a job can wait for one other job, not {sorted(waits_for)}")
        sharing = jobs.Sharing(
            owner=owner if owner is not None else default_owner(),
            preemptible=preempt and is_checkpointed(kind),
            time_limit_seconds=(
                time_limit
                if time_limit is not None
                else self.settings.time_limits.get(queue or valid.queue)
            ),
            sweep_id=sweep_id,
            continues=source.id if source else None,
            notify=urls,
        )
        # Uploads stay out of the transaction: the database ends a session idle that long.
        values = store_inputs(values, valid.input_files, self.store)
        with self.sessions.begin() as session:
            job = jobs.create_job(
                session,
                kind=kind,
                spec=values,
                queue=queue or valid.queue,
                priority=priority,
                max_attempts=max_attempts,
                depends_on=waits_for.pop() if waits_for else None,
                sharing=sharing,
            )
            job_id = job.id
        wake_scheduler(self.settings)
        return job_id

    def _source(self, kind: str, reference: str) -> Job:
        """The job `reference` names, checked to be one a `kind` job can continue."""
        with self.readers() as session:
            source = session.get(Job, self._resolve(session, reference))
            assert source is not None
            checkpoints = jobs.outputs_of(session, source.id, jobs.CHECKPOINT_ROLE)
        check_source(kind, is_checkpointed(kind), source, has_checkpoint=bool(checkpoints))
        return source

    def _continued_spec(
        self, kind: str, source: Job | None, given: dict[str, Any]
    ) -> dict[str, Any]:
        """A continuation's spec: its source's (input files fetched here to be checked
        again), with the fields given."""
        if source is None:
            return given
        inputs = input_fields(kind)
        return {**resolve_inputs(dict(source.spec), inputs, self.store), **given}

    def _link_models(
        self, session: Session, kind: str, valid: ValidSpec
    ) -> tuple[dict[str, Any], set[str]]:
        """Resolve fields that name another job's model; the job waits for unfinished ones."""
        values, waits_for = dict(valid.values), set()
        for field, producers in valid.model_inputs.items():
            if values.get(field) is None:
                continue
            source = self._model_source(session, str(values[field]))
            if source is None:
                raise SpecError(
                    f"{kind}: field {field!r}: no job or model output {values[field]!r}"
                )
            if source.kind not in producers:
                allowed = ", ".join(producers)
                raise SpecError(
                    f"{kind}: field {field!r}: job {source.id} is a {source.kind} job, "
                    f"expected {allowed}"
                )
            if source.status in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise SpecError(f"{kind}: field {field!r}: job {source.id} {source.status}")
            values[field] = source.id
            if source.status != JobStatus.SUCCEEDED:
                waits_for.add(source.id)
        return values, waits_for

    def _outputs_named(self, reference: str, role: str) -> tuple[str, dict[str, Path]] | None:
        """For submit-time checks: the job `reference` names and its outputs of `role`."""
        with self.readers() as session:
            job = self._model_source(session, reference)
            if job is None:
                return None
            stored = jobs.outputs_of(session, job.id, role)
        files = {name: self.store.local_path(o.key, o.sha256) for name, o in stored.items()}
        return job.id, files

    def _list_folder(self, url: str) -> list[RemoteFile]:
        """For submit-time checks of a dataset or corpus in an object store."""
        files = list_folder(url, self.settings.cache_dir)
        return [RemoteFile(name, size) for name, size in files]

    def _model_source(self, session: Session, reference: str) -> Job | None:
        """The job a `model` field names: a job id, a unique prefix of one, or the id of
        one of the job's model outputs (`#12` or `12`, as `atelier outputs` shows)."""
        try:
            return session.get(Job, self._resolve(session, reference))
        except JobNotFound:
            pass
        number = reference.removeprefix("#")
        if not number.isdigit():
            return None
        output = session.get(Output, int(number))
        if output is None or output.role != "model":
            return None
        return session.get(Job, output.job_id)

    def _dependency(self, session: Session, after: str) -> str:
        dependency = session.get(Job, self._resolve(session, after))
        assert dependency is not None
        if dependency.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise SpecError(f"--after {dependency.id}: that job already {dependency.status}")
        return dependency.id

    def _resolve(self, session: Session, job_id: str) -> str:
        """A job id, or a unique prefix of one (at least 4 characters)."""
        if session.get(Job, job_id) is not None:
            return job_id
        if len(job_id) >= 4:
            matches = session.scalars(
                select(Job.id).where(Job.id.startswith(job_id, autoescape=True)).limit(2)
            ).all()
            if len(matches) == 1:
                return matches[0]
        raise JobNotFound(f"no job {job_id!r}")

    def get(self, job_id: str) -> JobView:
        with self.readers() as session:
            job = session.get(Job, self._resolve(session, job_id))
            assert job is not None
            outputs = session.scalars(
                select(Output).where(Output.job_id == job.id).order_by(Output.id)
            ).all()
            return _view(job, list(outputs), self.store)

    def list(
        self,
        *,
        status: str | None = None,
        limit: int = 50,
        owner: str | None = None,
        sweep_id: str | None = None,
    ) -> list[JobView]:
        with self.readers() as session:
            query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
            if status:
                query = query.where(Job.status == status)
            if owner is not None:
                query = query.where(Job.owner == owner)
            if sweep_id is not None:
                query = query.where(Job.sweep_id == sweep_id)
            return [_view(job, [], self.store) for job in session.scalars(query).all()]

    def count(self, status: str) -> int:
        with self.readers() as session:
            return session.scalar(select(func.count()).where(Job.status == status)) or 0

    # `list` in this class's annotations below is the method above, hence builtins.list.
    def events(self, job_id: str) -> builtins.list[dict[str, Any]]:
        with self.readers() as session:
            resolved = self._resolve(session, job_id)
            rows = session.scalars(
                select(Event).where(Event.job_id == resolved).order_by(Event.id)
            ).all()
            return [{"at": e.at.isoformat(), "type": e.type, **e.payload} for e in rows]

    def cancel(self, job_id: str) -> str | None:
        return self._change(job_id, jobs.cancel)

    def pause(self, job_id: str) -> str | None:
        return self._change(job_id, jobs.pause)

    def resume(self, job_id: str) -> str | None:
        return self._change(job_id, lambda s, i: "pending" if jobs.resume(s, i) else None)

    def _change(self, job_id: str, change: Callable[[Session, str], str | None]) -> str | None:
        with self.sessions.begin() as session:
            outcome = change(session, self._resolve(session, job_id))
        wake_scheduler(self.settings)
        return outcome

    def download(self, output: OutputView, folder: Path) -> Path:
        """A copy of `output` at `folder/<role>/<name>` on this machine, its sha256 checked."""
        target = folder / output.role / output.name
        return self.store.download(output.key, target, output.sha256)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.5) -> JobView:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            view = self.get(job_id)
            if view.final:
                return view
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimedOut(f"job {view.id} still {view.status} after {timeout:g} s")
            time.sleep(poll)

    # --- sweeps (scheduler/sweeps.py) ----------------------------------------------------

    def checked_spec(self, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        """The spec as `submit` would store it (defaults filled in, model references
        resolved), checked as `submit` checks it; nothing is stored."""
        submission = Submission(outputs_of=self._outputs_named, list_folder=self._list_folder)
        valid = validate_spec(kind, dict(spec), submission)
        with self.readers() as session:
            values, _ = self._link_models(session, kind, valid)
        return values

    def sweep_jobs(self, sweep_id: str) -> builtins.list[JobView]:
        """The jobs of a sweep (its id, or a unique prefix of at least 4 characters),
        oldest first."""
        with self.readers() as session:
            resolved = self._resolve_sweep(session, sweep_id)
            query = select(Job).where(Job.sweep_id == resolved).order_by(Job.created_at, Job.id)
            return [_view(job, [], self.store) for job in session.scalars(query).all()]

    def jobs_with_outputs(
        self, role: str, job_ids: builtins.list[str] | None = None
    ) -> builtins.list[JobView]:
        """The jobs (all, or `job_ids`: full ids) with outputs of `role`, oldest first;
        each view lists only those outputs."""
        with self.readers() as session:
            query = select(Output).where(Output.role == role).order_by(Output.id)
            if job_ids is not None:
                query = query.where(Output.job_id.in_(job_ids))
            outputs: dict[str, builtins.list[Output]] = {}
            for output in session.scalars(query).all():
                outputs.setdefault(output.job_id, []).append(output)
            jobs = session.scalars(
                select(Job).where(Job.id.in_(outputs)).order_by(Job.created_at, Job.id)
            ).all()
            return [_view(job, outputs[job.id], self.store) for job in jobs]

    def sweep_metrics(self, sweep_id: str) -> dict[str, dict[str, float]]:
        """Job id -> the last value of each metric in the job's metrics events (a kind's
        per-epoch means), for the jobs of the sweep `sweep_id` (a full id)."""
        query = (
            select(Event.job_id, Event.payload)
            .join(Job, Job.id == Event.job_id)
            .where(Job.sweep_id == sweep_id, Event.type == EventType.METRICS)
            .order_by(Event.id)
        )
        latest: dict[str, dict[str, float]] = {}
        with self.readers() as session:
            for job_id, payload in session.execute(query).all():
                latest.setdefault(job_id, {}).update(
                    (name, float(value))
                    for name, value in payload.items()
                    if name not in ("step", "epoch") and _is_number(value)
                )
        return latest

    def _resolve_sweep(self, session: Session, sweep_id: str) -> str:
        if session.scalar(select(Job.id).where(Job.sweep_id == sweep_id).limit(1)) is not None:
            return sweep_id
        if len(sweep_id) >= 4:
            prefixed = Job.sweep_id.startswith(sweep_id, autoescape=True)
            matches = session.scalars(select(Job.sweep_id).where(prefixed).distinct().limit(2))
            found = [match for match in matches.all() if match is not None]
            if len(found) == 1:
                return found[0]
        raise SweepNotFound(f"no sweep {sweep_id!r}")


def _view(job: Job, outputs: list[Output], store: Storage) -> JobView:
    running = job.status == JobStatus.RUNNING
    return JobView(
        id=job.id,
        kind=job.kind,
        status=job.status,
        queue=job.queue,
        priority=job.priority,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        progress=job.progress,
        step=job.step,
        total_steps=job.total_steps,
        epoch=job.epoch,
        metrics=dict(job.metrics or {}),
        resumed_from_step=job.resumed_from_step,
        worker=job.lease_owner if running else None,
        worker_pid=job.worker_pid if running else None,
        depends_on=job.depends_on,
        error_code=job.error_code,
        error_message=job.error_message,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        spec=dict(job.spec),
        owner=job.owner,
        preemptible=job.preemptible,
        time_limit_seconds=job.time_limit_seconds,
        time_used_seconds=time_used(job, utcnow()),
        sweep_id=job.sweep_id,
        continues=job.continues,
        outputs=[
            OutputView(
                id=o.id,
                role=o.role,
                name=o.name,
                key=o.key,
                location=store.location(o.key),
                step=o.step,
                epoch=o.epoch,
                sha256=o.sha256,
                bytes=o.bytes,
            )
            for o in outputs
        ],
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
