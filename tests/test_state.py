"""Job state transitions and checkpoint files, against SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.presence import WorkerSlots
from core.publish import sha256_of
from core.storage import DirectoryStore
from db import jobs
from db.engine import IDLE_IN_TRANSACTION_SECONDS, make_engine, session_factory
from db.migrate import HEAD_REVISION, MIGRATIONS, current_revision, ensure_current, upgrade
from db.models import Event, EventType, Job, JobStatus, Output, StopRequest, utcnow
from kinds.contract import Checkpoint
from scheduler.capacity import free_slots
from tests.fixtures.stacks import postgres_database
from worker.checkpoints import CheckpointStore, load_checkpoint


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
        ensure_current(url)  # the embedded default migrates itself
        yield session_factory(url)
        return
    url, drop = postgres_database()
    with pytest.raises(RuntimeError, match="run `atelier db upgrade`"):
        ensure_current(url)
    upgrade(url)
    yield session_factory(url)
    session_factory(url).kw["bind"].dispose()
    drop()


def new_job(sessions: sessionmaker[Session], **values: object) -> str:
    with sessions.begin() as session:
        return jobs.create_job(session, kind="counter", spec={}, queue="gpu", **values).id


def status_of(sessions: sessionmaker[Session], job_id: str) -> Job:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_head_revision_constant_matches_the_migrations() -> None:
    revisions = [p.name.split("_")[0] for p in (MIGRATIONS / "versions").glob("*.py")]
    assert max(revisions) == HEAD_REVISION


def test_claim_is_exclusive_while_the_lease_lives(sessions: sessionmaker[Session]) -> None:
    job_id = new_job(sessions)
    with sessions.begin() as session:
        assert jobs.claim(session, job_id, "w1@h", 1, 30) is None  # pending, not queued
        assert jobs.mark_queued(session, job_id)
        assert not jobs.mark_queued(session, job_id)
    with sessions.begin() as session:
        first = jobs.claim(session, job_id, "w1@h", 1, 30)
    with sessions.begin() as session:
        assert jobs.claim(session, job_id, "w2@h", 2, 30) is None
    assert first is not None and first.attempt == 1
    job = status_of(sessions, job_id)
    assert (job.status, job.lease_owner, job.worker_pid) == ("running", "w1@h", 1)


def test_expired_lease_is_run_again_then_fails_when_attempts_run_out(
    sessions: sessionmaker[Session],
) -> None:
    job_id = new_job(sessions, max_attempts=2)
    for attempt in (1, 2):
        with sessions.begin() as session:
            assert jobs.mark_queued(session, job_id)
            claim = jobs.claim(session, job_id, "w@h", 7, lease_seconds=-1)  # born expired
        assert claim is not None and claim.attempt == attempt
        with sessions.begin() as session:
            assert not jobs.renew_lease(session, job_id, "not-the-token", 30)[0]
            changed = jobs.expire_leases(session, utcnow())
        expected = "pending" if attempt == 1 else "failed"
        assert changed == [(job_id, expected)]
    job = status_of(sessions, job_id)
    assert (job.status, job.error_code, job.attempts) == ("failed", "worker_lost", 2)
    assert job.error_message == "worker lost on each of 2 attempts"


def test_lost_lease_blocks_every_write_of_the_old_runner(sessions: sessionmaker[Session]) -> None:
    job_id = new_job(sessions)
    with sessions.begin() as session:
        jobs.mark_queued(session, job_id)
        old = jobs.claim(session, job_id, "w1@h", 1, lease_seconds=-1)
    with sessions.begin() as session:
        new = jobs.claim(session, job_id, "w2@h", 2, lease_seconds=30)  # takes over
    assert old is not None and new is not None and new.attempt == 2
    with sessions.begin() as session:
        assert not jobs.record_progress(session, job_id, old.token, step=3)
        assert not jobs.finish(session, job_id, old.token, JobStatus.SUCCEEDED)
        assert jobs.renew_lease(session, job_id, new.token, 30) == (True, None)
    assert status_of(sessions, job_id).lease_owner == "w2@h"


def test_runnable_order_dependencies_and_backoff(sessions: sessionmaker[Session]) -> None:
    low = new_job(sessions, priority=0)
    high = new_job(sessions, priority=5)
    blocked = new_job(sessions, priority=9, depends_on=low)
    with sessions.begin() as session:
        backing_off = jobs.create_job(session, kind="counter", spec={}, queue="gpu", priority=9)
        backing_off.run_after = utcnow() + timedelta(hours=1)
    with sessions() as session:
        order = [job.id for job in jobs.runnable_jobs(session, utcnow(), "gpu", limit=10)]
    assert order == [high, low]
    with sessions.begin() as session:
        assert jobs.cancel(session, low) == "cancelled"
    with sessions.begin() as session:
        assert jobs.cancel_orphans(session) == [blocked]
    job = status_of(sessions, blocked)
    assert (job.status, job.error_message) == ("cancelled", f"dependency {low} cancelled")


def test_release_on_pause_and_shutdown(sessions: sessionmaker[Session]) -> None:
    job_id = new_job(sessions)
    with sessions.begin() as session:
        jobs.mark_queued(session, job_id)
        claim = jobs.claim(session, job_id, "w@h", 1, 30)
        assert claim is not None
        assert jobs.pause(session, job_id) == "pausing"
        assert jobs.renew_lease(session, job_id, claim.token, 30) == (True, "pause")
        assert jobs.release(session, job_id, claim.token, StopRequest.PAUSE)
    job = status_of(sessions, job_id)
    assert (job.status, job.attempts, job.stop_request) == ("paused", 0, None)
    with sessions.begin() as session:
        assert jobs.resume(session, job_id)
        jobs.mark_queued(session, job_id)
        claim = jobs.claim(session, job_id, "w@h", 1, 30)
        assert claim is not None
        assert jobs.request_stop_for_owner(session, "w@h", StopRequest.SHUTDOWN) == [job_id]
        assert jobs.release(session, job_id, claim.token, StopRequest.SHUTDOWN)
    assert status_of(sessions, job_id).status == "pending"


def test_free_slots_never_overbook() -> None:
    workers = [WorkerSlots("a", ("gpu",), 2), WorkerSlots("b", ("gpu", "cpu"), 1)]
    assert free_slots(workers, {}) == (3, {"gpu": 3, "cpu": 1})
    assert free_slots(workers, {"gpu": 2, "cpu": 1}) == (0, {"gpu": 1, "cpu": 0})


def test_checkpoint_falls_back_to_previous_when_latest_is_corrupt(tmp_path: Path) -> None:
    files = DirectoryStore(tmp_path)
    store = CheckpointStore(files, "run/checkpoints")
    assert load_checkpoint(files, [(key, None) for key in store.saved()]) is None
    first = store.save(Checkpoint(step=5, arrays={"w": np.arange(3.0)}, meta={"epoch": 1}))
    latest = store.save(Checkpoint(step=10, arrays={"w": np.arange(3.0) * 2}, meta={"epoch": 2}))
    assert (first.key, latest.key) == (
        "run/checkpoints/step_00000005.npz",
        "run/checkpoints/step_00000010.npz",
    )
    both = [(latest.key, None), (first.key, None)]
    loaded = load_checkpoint(files, both)
    assert loaded is not None and loaded.step == 10 and loaded.meta == {"epoch": 2}
    np.testing.assert_array_equal(loaded.arrays["w"], [0.0, 2.0, 4.0])
    path = files.path(latest.key)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a torn write
    fallback = load_checkpoint(files, both)
    assert fallback is not None and fallback.step == 5
    np.testing.assert_array_equal(fallback.arrays["w"], [0.0, 1.0, 2.0])
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_checkpoint_file_is_never_replaced(tmp_path: Path) -> None:
    """A second save of a step (a run resumed before it, or a stale writer) gets a name
    of its own: a file the database points at is never changed under it."""
    files = DirectoryStore(tmp_path)
    store = CheckpointStore(files, "checkpoints")
    one = store.save(Checkpoint(step=4, arrays={"w": np.zeros(2)}))
    two = store.save(Checkpoint(step=4, arrays={"w": np.ones(2)}))
    names = (one.key, two.key)
    assert names == ("checkpoints/step_00000004.npz", "checkpoints/step_00000004.2.npz")
    assert one.sha256 != two.sha256 and sha256_of(files.path(one.key)) == one.sha256
    assert store.saved() == [two.key, one.key]


def test_checkpoint_pointers_move_only_under_the_lease(sessions: sessionmaker[Session]) -> None:
    """record_checkpoint makes a file the latest, the latest the previous, and hands back
    the dropped one; a run whose lease was taken over changes nothing."""
    with sessions.begin() as session:
        job_id = jobs.create_job(session, kind="counter", spec={}, queue="gpu").id
        jobs.mark_queued(session, job_id)
    with sessions.begin() as session:
        claim = jobs.claim(session, job_id, "w@h", 1, 60)
        assert claim is not None

    def checkpoint(key: str) -> Output:
        return Output(
            job_id=job_id, role=jobs.CHECKPOINT_ROLE, name=jobs.LATEST_CHECKPOINT, key=key,
            sha256=key[0] * 64, bytes=1,
        )  # fmt: skip

    dropped = []
    for key in ("a.npz", "b.npz", "c.npz"):
        with sessions.begin() as session:
            recorded = jobs.record_checkpoint(session, job_id, claim.token, checkpoint(key))
            assert recorded is not None
            dropped.append(recorded.unreferenced)
        with sessions() as session:
            pointers = jobs.outputs_of(session, job_id, jobs.CHECKPOINT_ROLE)
    assert dropped == [(), (), ("a.npz",)]
    assert pointers == {
        jobs.LATEST_CHECKPOINT: jobs.StoredOutput("c.npz", "c" * 64),
        jobs.PREVIOUS_CHECKPOINT: jobs.StoredOutput("b.npz", "b" * 64),
    }
    with sessions.begin() as session:
        assert jobs.record_checkpoint(session, job_id, "stale", checkpoint("d.npz")) is None
        assert not jobs.add_run_event(session, job_id, "stale", EventType.METRICS, {})
        assert jobs.add_run_event(session, job_id, claim.token, EventType.METRICS, {"x": 1.0})
    with sessions() as session:
        assert jobs.outputs_of(session, job_id, jobs.CHECKPOINT_ROLE) == pointers
        tokens = session.scalars(select(Event.run_token).where(Event.type == "metrics")).all()
    assert tokens == [claim.token]


def test_a_resume_from_an_older_checkpoint_forgets_the_event_files_past_it(
    sessions: sessionmaker[Session],
) -> None:
    """The event files of steps a resumed run logs again go (TensorBoard would show those
    steps twice); only the lease holder may drop them."""
    job_id = new_job(sessions)
    with sessions.begin() as session:
        jobs.mark_queued(session, job_id)
    with sessions.begin() as session:
        claim = jobs.claim(session, job_id, "w@h", 1, 60)
        assert claim is not None
    for last_step in (10, 20, 30):
        with sessions.begin() as session:
            segment = Output(
                job_id=job_id, role="tensorboard", name=f"events.{last_step}", step=last_step,
                key=f"run/tensorboard/events.{last_step}", sha256="0" * 64, bytes=1,
            )  # fmt: skip
            assert jobs.record_output(session, job_id, claim.token, segment) is not None
    with sessions.begin() as session:
        assert jobs.drop_outputs_after(session, job_id, "stale", "tensorboard", 10) is None
    with sessions.begin() as session:
        dropped = jobs.drop_outputs_after(session, job_id, claim.token, "tensorboard", 20)
    assert dropped is not None and dropped.unreferenced == ("run/tensorboard/events.30",)
    with sessions() as session:
        left = jobs.outputs_of(session, job_id, "tensorboard")
    assert sorted(left) == ["events.10", "events.20"]


def test_migrations_reach_head_on_a_new_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert current_revision(url) is None
    ensure_current(url)
    assert current_revision(url) == HEAD_REVISION


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_turns_recorded_paths_into_storage_keys(backend: str, tmp_path: Path) -> None:
    """Rows of 0002 hold a host's absolute path; 0003 keeps the part under ATELIER_HOME,
    whatever that home's path was, and leaves a row that was relative already."""
    from alembic import command

    from db.migrate import _config

    url, drop = (f"sqlite:///{tmp_path / 'old.db'}", lambda: None)
    if backend == "postgresql":
        url, drop = postgres_database()
    try:
        command.upgrade(_config(url), "0002")
        job_id = jobs.new_job_id()
        with session_factory(url).begin() as session:  # the columns of 0002, not today's
            session.execute(
                text(
                    "INSERT INTO jobs (id, kind, spec, queue, status, priority, attempts,"
                    " max_attempts, progress, created_at, updated_at) VALUES (:id, 'counter',"
                    " '{}', 'gpu', 'pending', 0, 0, 3, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"id": job_id},
            )
        paths = {
            "a": f"/srv/ateliers/outputs/x/outputs/{job_id}/3f2a9c1e/sample/epoch_0001.png",
            "b": f"outputs/{job_id}/3f2a9c1e/model/generator.keras",
        }
        with session_factory(url).begin() as session:
            for name, path in paths.items():
                session.execute(
                    text(
                        "INSERT INTO outputs (job_id, role, name, path, sha256, bytes, created_at)"
                        " VALUES (:job, 'sample', :name, :path, :sha, 1, CURRENT_TIMESTAMP)"
                    ),
                    {"job": job_id, "name": name, "path": path, "sha": "0" * 64},
                )
        upgrade(url)
        with session_factory(url)() as session:
            keys = dict(session.execute(select(Output.name, Output.key)).all())
        assert keys == {
            "a": f"outputs/{job_id}/3f2a9c1e/sample/epoch_0001.png",
            "b": f"outputs/{job_id}/3f2a9c1e/model/generator.keras",
        }
    finally:
        session_factory(url).kw["bind"].dispose()
        drop()


def test_a_worker_gone_inside_a_transaction_does_not_hold_its_job_s_row() -> None:
    """A worker cut off by the network just after the server ran its lease renewal leaves
    a session inside a transaction, holding the job's row lock, on a connection TCP takes
    hours to declare dead. PostgreSQL must end that session, or the scheduler expiring
    the lease (and any worker taking the job over) waits on the lock all that time."""
    url, drop = postgres_database()
    upgrade(url)
    sessions = session_factory(url)
    gone = make_engine(url).connect()  # its own engine: the worker on another machine
    try:
        job_id = new_job(sessions)
        with sessions.begin() as session:
            assert jobs.mark_queued(session, job_id)
            claim = jobs.claim(session, job_id, "b@h", 7, lease_seconds=-1)  # born expired
        assert claim is not None
        gone.begin()
        with Session(bind=gone) as renewing:
            assert jobs.renew_lease(renewing, job_id, claim.token, 60)[0]  # never committed

        expired: list[list[tuple[str, str]]] = []

        def expire() -> None:
            with sessions.begin() as session:
                expired.append(jobs.expire_leases(session, utcnow()))

        scheduler = threading.Thread(target=expire, daemon=True)
        scheduler.start()
        scheduler.join(timeout=IDLE_IN_TRANSACTION_SECONDS + 30)
        assert not scheduler.is_alive(), "the scheduler waits on a lock of a client gone"
        assert expired == [[(job_id, "pending")]]
        with pytest.raises(OperationalError):  # the server ended the gone one's session
            gone.execute(text("SELECT 1"))
    finally:
        gone.invalidate()
        gone.engine.dispose()
        sessions.kw["bind"].dispose()
        drop()


@pytest.mark.parametrize("asked", [StopRequest.CANCEL, StopRequest.PAUSE])
def test_a_cancel_or_pause_during_a_preemption_decides_where_the_job_goes(
    sessions: sessionmaker[Session], asked: StopRequest
) -> None:
    job_id = new_job(sessions)
    with sessions.begin() as session:
        assert jobs.mark_queued(session, job_id)
        claim = jobs.claim(session, job_id, "w@h", 7, 30)
    assert claim is not None
    with sessions.begin() as session:
        assert jobs.request_preemption(session, job_id, "someone-else")
        assert (jobs.cancel if asked == StopRequest.CANCEL else jobs.pause)(session, job_id)
    with sessions.begin() as session:  # the run stopped for the preemption it saw first
        assert jobs.release(session, job_id, claim.token, StopRequest.PREEMPT, ran=1.5)
    job = status_of(sessions, job_id)
    expected = "cancelled" if asked == StopRequest.CANCEL else "paused"
    assert (job.status, job.stop_request, job.lease_token) == (expected, None, None)
    assert job.run_seconds == 1.5
