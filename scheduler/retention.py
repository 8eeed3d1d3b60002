"""Retention: `atelier prune` removes finished jobs older than a cutoff (their rows, events
and files); `atelier du` shows where the store's space goes, per job and role.

Rows go first, in one transaction, then files: a prune cut short in between leaves files
no row names (the next prune removes such job folders), never a row naming a missing
file. A job stays, and the report says why, while another job still needs it: a job not
yet ended that waits for it (`--after`), continues from it (`--from`) or names it in its
spec (a sampler's `model`); a job whose notification is not delivered yet; and, when its
row would go, any job that stays and links to it (`--after`, `--from`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from core.durations import parse_duration
from core.errors import UserError
from core.inputs import STORE_FOLDER
from db.models import Event, EventType, Job, JobStatus, Output, utcnow

if TYPE_CHECKING:
    from scheduler.client import Client

PRUNABLE: tuple[str, ...] = tuple(
    str(status) for status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
)
MODEL_ROLE = "model"
OUTPUTS_FOLDER = "outputs"
"""Every file of a job is under `outputs/<job id>/` (worker.run_context)."""
INPUT_KEY = re.compile(rf"^{STORE_FOLDER}/[0-9a-f]{{64}}(\.[^/]+)?$")
"""A content-addressed input (core.inputs): the only keys a spec names."""
JOB_FOLDER = re.compile(r"^[0-9a-f]{16}$")
"""A folder named like a job id (db.jobs.new_job_id): only those are swept as orphans."""
CHUNK = 500
"""Ids per IN (...) list: SQLite limits the parameters of one statement."""


class RetentionError(UserError, ValueError):
    """A prune request Atelier cannot read."""


# --- what to prune -------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneRequest:
    older_than_seconds: float
    statuses: tuple[str, ...] = PRUNABLE
    keep_models: bool = False
    """Keep each job's row, its model outputs and its events but progress ones."""
    dry_run: bool = False

    @classmethod
    def parse(
        cls, older_than: str, statuses: str | None, *, keep_models: bool, dry_run: bool
    ) -> PruneRequest:
        seconds = parse_duration(older_than, "--older-than")
        return cls(seconds, parse_statuses(statuses), keep_models, dry_run)


def parse_statuses(text: str | None) -> tuple[str, ...]:
    """`--status succeeded,failed`: final statuses only (default: all three)."""
    if text is None:
        return PRUNABLE
    names = [name.strip() for name in text.split(",") if name.strip()]
    allowed = ", ".join(PRUNABLE)
    if not names:
        raise RetentionError(f"--status takes a comma-separated list of {allowed}")
    for name in names:
        if name not in {str(status) for status in JobStatus}:
            raise RetentionError(f"--status: unknown status {name!r} (prune takes {allowed})")
        if name not in PRUNABLE:
            raise RetentionError(f"--status: {name} jobs have not ended (prune takes {allowed})")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Link:
    """Job `source` needs job `target`: while `source` stays, `target` stays."""

    source: str
    source_status: str
    target: str
    how: str

    def reason(self) -> str:
        state = self.source_status if not JobStatus(self.source_status).final else "kept"
        return f"job {self.source} ({state}) {self.how}"


@dataclass
class Plan:
    prune: dict[str, str]
    """Job id -> status, for the jobs that go (with keep_models: that are trimmed)."""
    held: dict[str, str] = field(default_factory=dict)
    """Job id -> why it stays, for old jobs that must not go."""
    kept_keys: dict[str, set[str]] = field(default_factory=dict)
    """With keep_models: each job's model files, which stay."""
    rows: Counter[str] = field(default_factory=Counter)
    """Output rows and events each pruned job loses."""
    inputs: set[str] = field(default_factory=set)
    """Input keys that only pruned jobs name."""


def make_plan(session: Session, request: PruneRequest, now: datetime) -> Plan:
    cutoff = now - timedelta(seconds=request.older_than_seconds)
    old = session.execute(
        select(Job.id, Job.status, Job.notify, Job.notified_at)
        .where(Job.status.in_(request.statuses), Job.finished_at < cutoff)
        .order_by(Job.finished_at, Job.id)
    ).all()
    plan = Plan(prune={job_id: status for job_id, status, _, _ in old})
    if not request.keep_models:  # its row goes: the notifier would find nothing to send
        for job_id, _, notify, notified_at in old:
            if notify and notified_at is None:
                plan.held[job_id] = "its notification is not delivered yet"
                del plan.prune[job_id]
    links = _links(session, set(plan.prune))
    _hold(plan, links, rows_go=not request.keep_models)
    ids = list(plan.prune)
    if request.keep_models:
        _count_trimmed(session, plan, ids)
    else:
        _count_removed(session, plan, ids)
        plan.inputs = _unshared_inputs(session, ids)
    return plan


def _links(session: Session, targets: set[str]) -> list[Link]:
    """Every link to one of `targets`: --after and --from of any job, and spec fields of
    the jobs not yet ended (a sampler's `model` holds its training job's id)."""
    found: list[Link] = []
    linked = session.execute(
        select(Job.id, Job.status, Job.depends_on, Job.continues).where(
            or_(Job.depends_on.is_not(None), Job.continues.is_not(None))
        )
    ).all()
    for job_id, status, depends_on, continues in linked:
        if depends_on in targets:
            found.append(Link(job_id, status, depends_on, "depends on it (--after)"))
        if continues in targets:
            found.append(Link(job_id, status, continues, "continues from it (--from)"))
    live = session.execute(
        select(Job.id, Job.status, Job.spec).where(Job.status.not_in(PRUNABLE))
    ).all()
    for job_id, status, spec in live:
        for name, value in _strings(spec):
            if value in targets:
                found.append(Link(job_id, status, value, f"names it in field {name!r}"))
    return found


def _hold(plan: Plan, links: Sequence[Link], *, rows_go: bool) -> None:
    """Move the jobs a staying job needs from `plan.prune` to `plan.held`, until none is
    left: a job held may itself need another. A job that ended needs only rows (its
    --after and --from are foreign keys), so it holds nothing when rows stay."""
    changed = True
    while changed:
        changed = False
        for link in links:
            needed = rows_go or not JobStatus(link.source_status).final
            if needed and link.target in plan.prune and link.source not in plan.prune:
                del plan.prune[link.target]
                plan.held[link.target] = link.reason()
                changed = True


def _count_removed(session: Session, plan: Plan, ids: list[str]) -> None:
    for chunk in _chunks(ids):
        for table in (Output, Event):
            rows = session.execute(
                select(table.job_id, func.count()).where(table.job_id.in_(chunk))
                .group_by(table.job_id)
            ).all()  # fmt: skip
            plan.rows.update(dict(rows))


def _count_trimmed(session: Session, plan: Plan, ids: list[str]) -> None:
    for chunk in _chunks(ids):
        outputs = session.execute(
            select(Output.job_id, Output.role, Output.key).where(Output.job_id.in_(chunk))
        ).all()
        for job_id, role, key in outputs:
            if role == MODEL_ROLE:
                plan.kept_keys.setdefault(job_id, set()).add(key)
            else:
                plan.rows[job_id] += 1
        progress = session.execute(
            select(Event.job_id, func.count())
            .where(Event.job_id.in_(chunk), Event.type == EventType.PROGRESS)
            .group_by(Event.job_id)
        ).all()
        plan.rows.update(dict(progress))


def _unshared_inputs(session: Session, ids: list[str]) -> set[str]:
    """Input keys the specs of `ids` name and no other job's spec does."""
    named: set[str] = set()
    for chunk in _chunks(ids):
        for spec in session.scalars(select(Job.spec).where(Job.id.in_(chunk))):
            named |= _input_keys(spec)
    if not named:
        return named
    going = set(ids)
    for job_id, spec in session.execute(select(Job.id, Job.spec)):
        if job_id not in going:
            named -= _input_keys(spec)
    return named


def delete_rows(session: Session, plan: Plan, keep_models: bool) -> None:
    """The plan's rows, in the caller's transaction: all of each job's, or with
    `keep_models` its outputs but models and its progress events."""
    for chunk in _chunks(list(plan.prune)):
        if keep_models:
            session.execute(
                delete(Output).where(Output.job_id.in_(chunk), Output.role != MODEL_ROLE)
            )
            session.execute(
                delete(Event).where(Event.job_id.in_(chunk), Event.type == EventType.PROGRESS)
            )
            continue
        # Links between jobs that go together would make the order of deletes matter.
        session.execute(
            update(Job).where(Job.id.in_(chunk)).values(depends_on=None, continues=None)
        )
    if keep_models:
        return
    for chunk in _chunks(list(plan.prune)):
        session.execute(delete(Event).where(Event.job_id.in_(chunk)))
        session.execute(delete(Output).where(Output.job_id.in_(chunk)))
        session.execute(delete(Job).where(Job.id.in_(chunk)))


def _strings(value: Any, name: str = "") -> Iterator[tuple[str, str]]:
    """(top-level field, string) of every string in a spec, lists and objects included."""
    if isinstance(value, str):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, name or str(key))
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, name)


def _input_keys(spec: Any) -> set[str]:
    return {value for _, value in _strings(spec) if INPUT_KEY.match(value)}


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Freed:
    files: int = 0
    bytes: int = 0

    def __add__(self, other: Freed) -> Freed:
        return Freed(self.files + other.files, self.bytes + other.bytes)

    @classmethod
    def of(cls, sizes: Iterable[int]) -> Freed:
        listed = list(sizes)
        return cls(len(listed), sum(listed))

    def text(self) -> str:
        return f"{plural(self.files, 'file')}, {human_bytes(self.bytes)}"


@dataclass(frozen=True)
class PrunedJob:
    id: str
    status: str
    freed: Freed


@dataclass(frozen=True)
class PruneReport:
    request: PruneRequest
    cutoff: datetime
    jobs: list[PrunedJob]
    held: dict[str, str]
    inputs: Freed
    """Input files that no remaining job names."""
    orphans: Freed
    """Files under job folders that no job row names (a prune cut short left them)."""

    @property
    def freed(self) -> Freed:
        total = self.inputs + self.orphans
        for job in self.jobs:
            total += job.freed
        return total

    def by_status(self) -> dict[str, int]:
        counts = Counter(job.status for job in self.jobs)
        return {status: counts[status] for status in PRUNABLE if counts[status]}

    def as_json(self) -> dict[str, Any]:
        freed = self.freed
        return {
            "dry_run": self.request.dry_run,
            "keep_models": self.request.keep_models,
            "cutoff": self.cutoff.isoformat(),
            "jobs": [
                {"id": j.id, "status": j.status, "files": j.freed.files, "bytes": j.freed.bytes}
                for j in self.jobs
            ],
            "by_status": self.by_status(),
            "files": freed.files,
            "bytes": freed.bytes,
            "inputs": {"files": self.inputs.files, "bytes": self.inputs.bytes},
            "orphans": {"files": self.orphans.files, "bytes": self.orphans.bytes},
            "kept": [{"id": job_id, "reason": why} for job_id, why in self.held.items()],
        }

    def lines(self) -> list[str]:
        dry = self.request.dry_run
        verb = "would prune" if dry else "pruned"
        lines = [f"{verb} {job.id}  {job.status:<10} {job.freed.text()}" for job in self.jobs]
        if self.inputs.files:
            lines.append(f"{verb} inputs no remaining job names: {self.inputs.text()}")
        if self.orphans.files:
            lines.append(f"{verb} files of jobs no longer in the database: {self.orphans.text()}")
        lines += [f"kept {job_id}: {why}" for job_id, why in self.held.items()]
        statuses = ", ".join(f"{status} {n}" for status, n in self.by_status().items())
        summary = f"{verb} {plural(len(self.jobs), 'job')}"
        summary += f" ({statuses})" if statuses else ""
        summary += " (models kept)" if self.request.keep_models else ""
        summary += f": {self.freed.text()}" + (" to free" if dry else " freed")
        if self.held:
            summary += f"; kept {plural(len(self.held), 'job')} still needed"
        lines.append(summary + ("; nothing changed (dry run)" if dry else ""))
        return lines


SIZE_UNITS = ("kB", "MB", "GB", "TB", "PB")


def human_bytes(count: int) -> str:
    """A size for people, in decimal units: 999 B, 1.2 kB, 3.4 MB."""
    if count < 1000:
        return f"{count} B"
    value = float(count)
    for unit in SIZE_UNITS:
        value /= 1000
        if value < 999.95 or unit == SIZE_UNITS[-1]:  # 999.95 would print as 1000.0
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --- space used ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobUsage:
    id: str
    kind: str
    status: str
    roles: dict[str, Freed]
    """Role -> its recorded outputs (files and bytes)."""
    inputs: dict[str, int]
    """Input key -> bytes, for the inputs its spec names (maybe shared with other jobs)."""

    @property
    def outputs(self) -> Freed:
        return sum(self.roles.values(), Freed())

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "files": self.outputs.files,
            "bytes": self.outputs.bytes,
            "roles": {role: {"files": u.files, "bytes": u.bytes} for role, u in self.roles.items()},
            "inputs": {"files": len(self.inputs), "bytes": sum(self.inputs.values())},
        }


@dataclass(frozen=True)
class Usage:
    jobs: list[JobUsage]
    """Largest first."""

    @property
    def inputs(self) -> Freed:
        """The inputs named, each counted once however many jobs share it."""
        shared = {key: size for job in self.jobs for key, size in job.inputs.items()}
        return Freed.of(shared.values())

    @property
    def outputs(self) -> Freed:
        return sum((job.outputs for job in self.jobs), Freed())

    def as_json(self) -> dict[str, Any]:
        return {
            "jobs": [job.as_json() for job in self.jobs],
            "files": self.outputs.files,
            "bytes": self.outputs.bytes,
            "inputs": {"files": self.inputs.files, "bytes": self.inputs.bytes},
        }

    def lines(self) -> list[str]:
        lines = []
        for job in self.jobs:
            roles = ", ".join(f"{role} {human_bytes(u.bytes)}" for role, u in job.roles.items())
            line = f"{job.id}  {job.kind:<14} {job.status:<10} {human_bytes(job.outputs.bytes):>9}"
            line += f"  {roles}" if roles else ""
            if job.inputs:
                line += f"; inputs {Freed.of(job.inputs.values()).text()}"
            lines.append(line)
        lines.append(
            f"total {human_bytes(self.outputs.bytes)} in {plural(self.outputs.files, 'output')}"
            f" of {plural(len(self.jobs), 'job')}; inputs {self.inputs.text()}"
            " (each counted once: jobs may share them)"
        )
        return lines

    def job_lines(self) -> list[str]:
        """One job in detail: a line per role."""
        [job] = self.jobs
        lines = [f"job {job.id}  ({job.kind}, {job.status})"]
        for role, used in job.roles.items():
            lines.append(f"{role:<12} {human_bytes(used.bytes):>9}  {plural(used.files, 'file')}")
        lines.append(f"{'total':<12} {human_bytes(job.outputs.bytes):>9}  "
                     f"{plural(job.outputs.files, 'file')}")  # fmt: skip
        inputs = Freed.of(job.inputs.values())
        lines.append(f"{'inputs':<12} {human_bytes(inputs.bytes):>9}  "
                     f"{plural(inputs.files, 'file')} (may be shared with other jobs)")  # fmt: skip
        return lines


# --- the operations ------------------------------------------------------------------------


class Retention:
    """Prune and du on a client's database and store."""

    def __init__(self, client: Client) -> None:
        self.sessions = client.sessions
        self.readers = client.readers
        self.store = client.store

    def prune(self, request: PruneRequest) -> PruneReport:
        now = utcnow()
        if request.dry_run:
            with self.readers() as session:
                plan = make_plan(session, request, now)
        else:
            # Plan and delete in one transaction: what it checked still holds at commit.
            with self.sessions.begin() as session:
                plan = make_plan(session, request, now)
                delete_rows(session, plan, request.keep_models)
        # With keep_models, a job already trimmed has nothing left to lose: not reported.
        files = self._job_files(plan, request)
        jobs = [job for job in files if job.freed.files or plan.rows[job.id]]
        return PruneReport(
            request=request,
            cutoff=now - timedelta(seconds=request.older_than_seconds),
            jobs=jobs,
            held=plan.held,
            inputs=self._inputs(plan.inputs, request.dry_run),
            orphans=self._orphans(set(plan.prune), request.dry_run),
        )

    def _job_files(self, plan: Plan, request: PruneRequest) -> Iterator[PrunedJob]:
        for job_id, status in plan.prune.items():
            folder = f"{OUTPUTS_FOLDER}/{job_id}"
            kept = plan.kept_keys.get(job_id, set())
            sizes = self.store.sizes(folder)
            if not request.dry_run:
                self.store.delete_folder(folder, keep=kept)
            yield PrunedJob(job_id, status, Freed.of(n for k, n in sizes.items() if k not in kept))

    def _inputs(self, keys: set[str], dry_run: bool) -> Freed:
        if not keys:
            return Freed()
        sizes = {key: size for key, size in self.store.sizes(STORE_FOLDER).items() if key in keys}
        if not dry_run:
            for key in sizes:
                self.store.delete(key)
        return Freed.of(sizes.values())

    def _orphans(self, pruned: set[str], dry_run: bool) -> Freed:
        """Job folders no row names (listed before the rows are read: a job's row always
        comes before its first file)."""
        folders = [name for name in self.store.folders(OUTPUTS_FOLDER) if JOB_FOLDER.match(name)]
        with self.readers() as session:
            known = set(session.scalars(select(Job.id)))
        freed = Freed()
        for name in folders:
            if name in known or name in pruned:
                continue
            folder = f"{OUTPUTS_FOLDER}/{name}"
            freed += Freed.of(self.store.sizes(folder).values())
            if not dry_run:
                self.store.delete_folder(folder)
        return freed

    def usage(self, job_id: str | None = None) -> Usage:
        """Space per job (or of one job) and role, from the outputs' recorded sizes."""
        with self.readers() as session:
            jobs = select(Job.id, Job.kind, Job.status, Job.spec)
            outputs = select(Output.job_id, Output.role, func.count(), func.sum(Output.bytes))
            if job_id is not None:
                jobs = jobs.where(Job.id == job_id)
                outputs = outputs.where(Output.job_id == job_id)
            roles: dict[str, dict[str, Freed]] = {}
            for owner, role, files, total in session.execute(
                outputs.group_by(Output.job_id, Output.role).order_by(Output.role)
            ):
                roles.setdefault(owner, {})[role] = Freed(int(files), int(total or 0))
            rows = session.execute(jobs).all()
        named = {row.id: _input_keys(row.spec) for row in rows}
        sizes = self.store.sizes(STORE_FOLDER) if any(named.values()) else {}
        found = [
            JobUsage(
                row.id,
                row.kind,
                row.status,
                roles.get(row.id, {}),
                {key: sizes.get(key, 0) for key in sorted(named[row.id])},
            )
            for row in rows
        ]
        if job_id is None:  # the whole store: the jobs that hold something
            found = [job for job in found if job.roles or job.inputs]
        found.sort(key=lambda job: (-job.outputs.bytes, job.id))
        return Usage(found)
