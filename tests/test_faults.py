"""Faults on real processes (issue 11, "Fenced writes and a scheduler that outlives its
database"): a worker frozen past its lease (SIGSTOP, then SIGCONT) during a checkpoint
save and in the middle of a step, the database taken away for 15 s mid-job, and the disk
of ATELIER_HOME filled mid-job. Each scenario runs `atelier up` stacks with the fast
`counter` kind (tests/fixtures/kinds.py) and the fault fixtures (tests/fixtures/faults.py).

A scenario's checks are collected (`Expectations`) and reported together, so one run shows
every guarantee that broke.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.publish import sha256_of
from scheduler.client import JobView
from tests.fixtures import kinds as counter
from tests.fixtures.faults import (
    Expectations,
    NoRunTokenColumn,
    OutputRow,
    PostgresCluster,
    RedisServer,
    alive,
    broker_down,
    checkpoint_row,
    event_rows,
    events_without_tokens,
    fault_stack,
    freeze_before_boundary,
    freeze_during_save,
    job_folder,
    job_pid,
    lease_of,
    log_records,
    output_rows,
    postgres_cluster,
    redis_server,
    run_cli,
    scheduler_pid,
    side_by_side,
    small_disk,
    temporary_files,
    thaw,
    wait_until,
    worker_pids,
)
from tests.fixtures.jobs import wait_running
from tests.fixtures.local_context import LocalContext
from tests.fixtures.stacks import LEASE_SECONDS, Stack, postgres_database

RUN_EVENTS = {"started", "progress", "metrics", "resumed", "succeeded", "failed", "retry"}
"""Events a run writes under its lease: each carries the run's token."""
NOT_RUN_EVENTS = {"submitted", "lease_expired"}
"""Events no run writes (the client's, the scheduler's): no token."""
RUN_FOLDER_CHARS = 8
"""A run's files live under `<job id>/<the first 8 hex characters of its lease token>/`."""
SETTLE_SECONDS = 2.0
"""After a frozen process continues: time for it to do whatever it still would."""


# --- shared checks -----------------------------------------------------------------------


def summary_of(view: JobView) -> dict[str, Any]:
    [result] = [o for o in view.outputs if o.role == "result" and o.name == "summary.json"]
    return json.loads(Path(result.location).read_text())


def deterministic(summary: dict[str, Any]) -> dict[str, Any]:
    """What an interrupted run's summary shares with an uninterrupted one's."""
    return {k: v for k, v in summary.items() if k not in ("started_from", "attempt")}


def uninterrupted_summary(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The counter spec run in this process without interruption."""
    spec = counter.Spec.model_validate({**values, "step_seconds": 0})
    ctx = LocalContext(folder)
    counter.run(spec, ctx)
    return json.loads(ctx.outputs[("result", "summary.json")].read_text())


def check_rows_match_files(expect: Expectations, rows: list[OutputRow]) -> None:
    for row in rows:
        path = Path(row.path)
        if not expect(path.is_file(), f"{row.role}/{row.name}: no file at {row.path}"):
            continue
        expect(
            sha256_of(path) == row.sha256 and path.stat().st_size == row.bytes,
            f"{row.role}/{row.name} (step {row.step}): the row's sha256/bytes "
            f"{row.sha256[:12]}/{row.bytes} do not match the file at {row.path} "
            f"({sha256_of(path)[:12]}/{path.stat().st_size})",
        )


def check_one_result(expect: Expectations, rows: list[OutputRow]) -> None:
    keys = [(r.role, r.name) for r in rows]
    expect(len(keys) == len(set(keys)), f"an output recorded twice: {sorted(keys)}")
    results = sorted(r.name for r in rows if r.role == "result")
    expect.equal(results, ["summary.json"], "result outputs")


def check_run_layout(
    expect: Expectations, stack: Stack, job_id: str, rows: list[OutputRow], final_token: str
) -> None:
    """NEW (issue 11): a run's files live under `<job>/<run>/`, `<run>` its token's first
    8 hex characters; checkpoints at `<run>/checkpoints/step_<step:08d>.npz`; the
    job's current checkpoint is the row `checkpoint/latest.npz`, the one before it
    `checkpoint/previous.npz`, whose paths point at such files."""
    folder = job_folder(stack, job_id)
    run = final_token[:RUN_FOLDER_CHARS] or "<run>"
    for row in (r for r in rows if r.role != "checkpoint"):
        path = Path(row.path)
        run_folder = path.parent.parent
        expect(
            (path.name, path.parent.name, run_folder.parent) == (row.name, row.role, folder)
            and len(run_folder.name) == RUN_FOLDER_CHARS
            and (not final_token or run_folder.name == run or row.role == "tensorboard"),
            f"{row.role}/{row.name} at {row.path}, expected {folder}/{run}/{row.role}/{row.name}",
        )
    checkpoints = {r.name: r for r in rows if r.role == "checkpoint"}
    expect.equal(sorted(checkpoints), ["latest.npz", "previous.npz"], "checkpoint rows")
    for row in checkpoints.values():
        path = Path(row.path)
        expect(
            path.parent.name == "checkpoints"
            and path.parent.parent.parent == folder
            and len(path.parent.parent.name) == RUN_FOLDER_CHARS
            and path.name == f"step_{row.step or 0:08d}.npz",
            f"checkpoint/{row.name} (step {row.step}) at {row.path}, expected "
            f"{folder}/<run>/checkpoints/step_{row.step or 0:08d}.npz",
        )
    if "latest.npz" in checkpoints and "previous.npz" in checkpoints:
        latest, previous = checkpoints["latest.npz"].step, checkpoints["previous.npz"].step
        expect(
            (latest or 0) > (previous or 0),
            f"latest checkpoint step {latest} not after the previous one's {previous}",
        )


def check_takeover(
    expect: Expectations,
    stack: Stack,
    job_id: str,
    view: JobView,
    *,
    stale_token: str,
    takeover_token: str,
    committed_step: int,
    reference: dict[str, Any],
) -> None:
    """What must hold after a run was frozen past its lease, another took the job over,
    and the frozen one continued."""
    expect.equal(view.status, "succeeded", f"status ({view.error_code}: {view.error_message})")
    expect.equal(view.attempts, 2, "attempts")
    rows = output_rows(stack, job_id)
    check_one_result(expect, rows)
    check_rows_match_files(expect, rows)
    leftovers = temporary_files(job_folder(stack, job_id))
    expect(not leftovers, f"temporary files left: {[str(p) for p in leftovers]}")

    summary = summary_of(view) if any(r.role == "result" for r in rows) else {}
    expect.equal(deterministic(summary), reference, "the summary, but for the resume point")
    expect(
        view.resumed_from_step is not None and view.resumed_from_step >= committed_step,
        f"resumed from step {view.resumed_from_step}, before the stale run's last committed "
        f"checkpoint (step {committed_step})",
    )
    expect.equal(summary.get("started_from"), view.resumed_from_step, "summary's started_from")

    events = events_without_tokens(stack, job_id)
    types = [e.type for e in events]
    expect.equal(types.count("started"), 2, "started events")
    expect.equal(types.count("resumed"), 1, "resumed events")
    expect.equal(types.count("lease_expired"), 1, "lease_expired events")
    if "succeeded" in types:
        after = [e.type for e in events[types.index("succeeded") + 1 :]]
        expect(not after, f"events written after the job's `succeeded` event: {after}")
    takeover = [e.id for e in events if e.type == "started"][-1]
    steps = [e.payload["step"] for e in events if e.type == "metrics" and e.id > takeover]
    expect(
        all(a < b for a, b in itertools.pairwise(steps)),
        f"metrics events after the takeover go back in steps (a stale run's): {steps}",
    )

    # NEW: every event of a run carries its token; the stale run's stop at the takeover.
    try:
        tokened = event_rows(stack, job_id)
    except NoRunTokenColumn as error:
        expect(False, str(error))
    else:
        stale = [(e.id, e.type) for e in tokened if e.run_token == stale_token and e.id > takeover]
        expect(not stale, f"events with the stale run's token after the takeover: {stale}")
        untokened = [(e.id, e.type) for e in tokened if e.type in RUN_EVENTS and not e.run_token]
        expect(not untokened, f"run events without a run token: {untokened}")
        foreign = [
            (e.type, e.run_token) for e in tokened if e.type in NOT_RUN_EVENTS and e.run_token
        ]
        expect(not foreign, f"events of no run that carry a token: {foreign}")
        tokens = {e.run_token for e in tokened if e.run_token}
        expect.equal(tokens, {stale_token, takeover_token}, "run tokens of the job's events")

    check_run_layout(expect, stack, job_id, rows, takeover_token)
    stale_folder = job_folder(stack, job_id) / stale_token[:RUN_FOLDER_CHARS]
    # The stale run's TensorBoard events of the steps it checkpointed before the takeover
    # stay (the new run resumed after them); nothing past them.
    resumed = view.resumed_from_step or 0
    trusted = [
        r.path for r in rows
        if r.path.startswith(str(stale_folder) + "/")
        and not (r.role == "tensorboard" and (r.step or 0) <= resumed)
    ]  # fmt: skip
    expect(not trusted, f"rows pointing into the stale run's folder: {trusted}")


# --- 1, 2: a worker frozen past its lease ----------------------------------------------


@dataclass(frozen=True)
class Backend:
    stack: Stack
    own_redis: RedisServer | None
    """The stack's broker when it is a Redis of this module's own (else the embedded one)."""


@pytest.fixture(scope="module", params=["embedded", "services"])
def two_workers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """Two workers, 3 s leases: SQLite and the embedded Redis, or a fresh database on
    the machine's PostgreSQL and a Redis of this module's own."""
    root = tmp_path_factory.mktemp(f"freeze-{request.param}")
    with contextlib.ExitStack() as exits:
        services: dict[str, str] = {}
        server = None
        if request.param == "services":
            url, drop = postgres_database()
            exits.callback(drop)
            server = exits.enter_context(redis_server(root / "own-redis"))
            services = {"database_url": url, "broker_url": server.url}
        stack = exits.enter_context(
            fault_stack(root / "home", name=request.param, workers=2, **services)
        )
        yield Backend(stack, server)


def wait_for_takeover(stack: Stack, job_id: str, stale_token: str) -> str:
    """The token of the run that took the job over from `stale_token`'s."""
    taken: list[str] = []

    def taken_over() -> bool:
        lease = lease_of(stack, job_id)
        if lease.status == "running" and lease.token not in (None, stale_token):
            taken.append(lease.token)
        return bool(taken)

    wait_until(taken_over, timeout=8 * LEASE_SECONDS, what=f"a takeover of job {job_id}")
    return taken[0]


SAVE_FREEZE = {
    "steps": 60,
    "step_seconds": 0.05,
    "checkpoint_every": 5,
    "checkpoint_mb": 16.0,
    "metrics_every": 5,
}


def test_worker_frozen_during_a_checkpoint_save_changes_nothing_after_takeover(
    two_workers: Backend, tmp_path: Path
) -> None:
    """SIGSTOP the job's process while it writes a checkpoint, for more than three
    leases: the other worker takes the job over, resumes and checkpoints to the end; then
    SIGCONT. Whether the stale run gets to finish its save or not, nothing it does after
    the takeover counts: no row, no event, no file a reader follows, no temporary file
    left behind."""
    stack = two_workers.stack
    reference = deterministic(uninterrupted_summary(SAVE_FREEZE, tmp_path / "reference"))
    job_id = stack.submit("counter", **SAVE_FREEZE)
    wait_running(stack, job_id, min_step=SAVE_FREEZE["checkpoint_every"] + 1)
    pid = job_pid(stack, job_id)
    temporary = freeze_during_save(stack, job_id, pid)
    frozen_at = time.monotonic()
    try:
        stale = lease_of(stack, job_id)
        committed = checkpoint_row(stack, job_id)
        assert stale.token is not None and stale.worker_pid == pid, stale
        assert committed is not None and committed.step is not None
        takeover_token = wait_for_takeover(stack, job_id, stale.token)

        def past_the_stale_save() -> bool:
            latest = checkpoint_row(stack, job_id)
            done = latest is not None and latest.step == SAVE_FREEZE["steps"]
            return done and time.monotonic() - frozen_at > 3 * LEASE_SECONDS

        # Continue it only once the new run wrote its last checkpoint (none comes after
        # to hide what the stale save does to the files).
        wait_until(past_the_stale_save, timeout=60, what="the new run's last checkpoint")
    finally:
        thaw(pid)
    thawed_at = time.monotonic()
    view = stack.wait(job_id, timeout=60)
    wait_until(
        lambda: (
            time.monotonic() - thawed_at > SETTLE_SECONDS
            and not temporary_files(job_folder(stack, job_id))
        ),
        timeout=30,
        what="the stale run's save to end",
    )
    view = stack.client.get(job_id)

    expect = Expectations(f"frozen during a save ({stack.name}; caught {temporary.name})")
    check_takeover(
        expect,
        stack,
        job_id,
        view,
        stale_token=stale.token,
        takeover_token=takeover_token,
        committed_step=committed.step,
        reference=reference,
    )
    expect.verify()


STEP_FREEZE = {"steps": 50, "step_seconds": 0.2, "checkpoint_every": 5, "metrics_every": 1}


def test_worker_frozen_mid_step_writes_nothing_after_takeover(
    two_workers: Backend, tmp_path: Path
) -> None:
    """SIGSTOP the job's process in the middle of the step before a checkpoint (not in a
    save) for more than three leases; SIGCONT while the run that took over still runs.
    The stale run wakes up to finish that step (a metrics event, a checkpoint due): none
    of it is written."""
    stack = two_workers.stack
    every = STEP_FREEZE["checkpoint_every"]
    reference = deterministic(uninterrupted_summary(STEP_FREEZE, tmp_path / "reference"))
    job_id = stack.submit("counter", **STEP_FREEZE)
    wait_running(stack, job_id, min_step=2)
    pid = job_pid(stack, job_id)
    frozen_step = freeze_before_boundary(stack, job_id, pid, every)
    frozen_at = time.monotonic()
    try:
        stale = lease_of(stack, job_id)
        committed = checkpoint_row(stack, job_id)
        assert stale.token is not None and stale.worker_pid == pid, stale
        assert committed is not None and committed.step == frozen_step + 1 - every, committed
        takeover_token = wait_for_takeover(stack, job_id, stale.token)

        def past_the_stale_step() -> bool:
            latest = checkpoint_row(stack, job_id)
            further = latest is not None and (latest.step or 0) > frozen_step + every
            return further and time.monotonic() - frozen_at > 3 * LEASE_SECONDS

        wait_until(past_the_stale_step, timeout=60, what="the new run to checkpoint further")
        running_at_thaw = lease_of(stack, job_id)
    finally:
        thaw(pid)
    thawed_at = time.monotonic()
    assert running_at_thaw.token == takeover_token, "the new run ended before the thaw"
    view = stack.wait(job_id, timeout=60)
    wait_until(lambda: time.monotonic() - thawed_at > SETTLE_SECONDS, 30, "settling")
    view = stack.client.get(job_id)

    expect = Expectations(f"frozen mid-step before step {frozen_step + 1} ({stack.name})")
    check_takeover(
        expect,
        stack,
        job_id,
        view,
        stale_token=stale.token,
        takeover_token=takeover_token,
        committed_step=committed.step or 0,
        reference=reference,
    )
    expect.verify()


def test_a_runs_files_and_events_are_its_own(two_workers: Backend) -> None:
    """NEW (issue 11), without a fault: an uninterrupted run's outputs and checkpoints
    live in its own folder, the rows point at them, and its events carry its token."""
    stack = two_workers.stack
    job_id = stack.submit("counter", steps=12, step_seconds=0, checkpoint_every=5)
    view = stack.wait(job_id, timeout=60)
    assert view.status == "succeeded", view.error_message
    rows = output_rows(stack, job_id)
    expect = Expectations(f"one uninterrupted run ({stack.name})")
    check_one_result(expect, rows)
    check_rows_match_files(expect, rows)
    try:
        events = event_rows(stack, job_id)
    except NoRunTokenColumn as error:
        expect(False, str(error))
        token = ""
    else:
        tokens = {e.run_token for e in events if e.type in RUN_EVENTS}
        expect(len(tokens) == 1 and None not in tokens, f"run tokens of run events: {tokens}")
        token = next(iter(tokens)) or ""
        expect.equal(
            [e.run_token for e in events if e.type in NOT_RUN_EVENTS], [None], "submitted token"
        )
    check_run_layout(expect, stack, job_id, rows, token)
    steps = {r.name: r.step for r in rows if r.role == "checkpoint"}
    expect.equal(steps, {"latest.npz": 12, "previous.npz": 10}, "checkpoint rows' steps")
    expect.verify()


BROKER_OUTAGE_SECONDS = 6.0
BROKER_JOB = {"steps": 40, "step_seconds": 0.2, "checkpoint_every": 5}
BROKER_SLACK_SECONDS = 4.0
"""How much longer than its steps' sleep the running job may take, outage included: the
broker carries no job state, so a job must not wait for it (progress for Flower is
best effort)."""


def test_broker_outage_mid_job_is_waited_out(two_workers: Backend) -> None:
    """NEW (issue 11): the broker away for 6 s while a job runs (a Redis of our own
    stopped, then started again empty; the embedded one frozen, then continued). The job
    runs on (its lease lives in the database) and ends in its first attempt; the
    scheduler and the workers are the same processes afterwards and logged the outage in
    a line or two each; a job submitted during the outage runs once the broker is back,
    on the free worker (not behind the running job, nor after the lost-message resend)."""
    stack = two_workers.stack
    scheduler, workers = scheduler_pid(stack), worker_pids(stack)
    job_id = stack.submit("counter", **BROKER_JOB)
    wait_running(stack, job_id, min_step=BROKER_JOB["checkpoint_every"] + 2)
    offset = stack.log_path.stat().st_size
    with broker_down(stack, two_workers.own_redis):
        time.sleep(1.0)
        during = stack.submit("counter", steps=2, step_seconds=0)
        time.sleep(BROKER_OUTAGE_SECONDS - 1.0)
        alive_during = alive(scheduler) and all(alive(pid) for pid in workers)
    back_at = datetime.now(UTC)
    view = _final_or_current(stack, job_id, timeout=60)
    submitted_during = _final_or_current(stack, during, timeout=60)
    after = _final_or_current(stack, stack.submit("counter", steps=2, step_seconds=0), 30)

    expect = Expectations(f"broker down {BROKER_OUTAGE_SECONDS:g} s ({stack.name})")
    expect.equal(
        (view.status, view.attempts), ("succeeded", 1), f"the running job ({view.error_message})"
    )
    types = [e.type for e in events_without_tokens(stack, job_id)]
    expect.equal((types.count("resumed"), types.count("lease_expired")), (0, 0), "resumes")
    nominal = BROKER_JOB["steps"] * BROKER_JOB["step_seconds"]
    if view.started_at and view.finished_at:
        took = (view.finished_at - view.started_at).total_seconds()
        expect(
            took <= nominal + BROKER_SLACK_SECONDS,
            f"the running job took {took:.1f} s for {nominal:g} s of steps: it waited for "
            "the broker",
        )
    expect.equal(submitted_during.status, "succeeded", "a job submitted during the outage")
    if submitted_during.started_at:
        wait = (submitted_during.started_at - back_at).total_seconds()
        expect(wait <= 10, f"the job submitted during the outage started {wait:.1f} s after it")
    expect.equal(after.status, "succeeded", "a job submitted after the outage")
    expect(alive_during, "the scheduler or a worker process died during the outage")
    expect.equal(
        (scheduler_pid(stack), worker_pids(stack)), (scheduler, workers), "scheduler, workers"
    )
    check_quiet_log(
        expect, _log_since(stack, offset), processes=1 + 2 * stack.workers, ignore=("celery.",)
    )
    expect.verify()


# --- 3: the database goes away for 15 s --------------------------------------------------

OUTAGE_SECONDS = 15.0
LONG_LEASE_SECONDS = 25.0
"""Longer than the outage: the run rides it out."""
SHORT_LEASE_SECONDS = LEASE_SECONDS
"""Shorter: the run's lease has expired when the database comes back."""
OUTAGE_JOB = {"long": {"steps": 100}, "short": {"steps": 40}}
OUTAGE_SPEC = {"step_seconds": 0.2, "checkpoint_every": 5}
CLI_CALLS = {
    "status": ("status", "{job}"),
    "submit": ("submit", "counter", "--set", "steps=2"),
    "list": ("list",),
}


@dataclass
class OutageRun:
    """One stack's observations around the outage."""

    variant: str
    stack: Stack
    job_id: str
    scheduler_before: int
    first_token: str
    committed_step: int
    step_at_outage: int
    last_event_before: int
    log_offset: int = 0
    scheduler_alive_at_end_of_outage: bool = False
    scheduler_after: int = 0
    view: JobView | None = None
    follow_up: JobView | None = None
    log_during: str = ""
    jobs_before: int = 0
    jobs_after: int = 0
    cli: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outage:
    cluster: PostgresCluster
    runs: dict[str, OutageRun]


@pytest.fixture(scope="module")
def database_outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    """Two stacks (one worker each, the embedded Redis) on a PostgreSQL of this module's
    own, one with leases longer than the outage and one with shorter ones, each running a
    counter job; the cluster is stopped for OUTAGE_SECONDS mid-job (CLI calls made
    meanwhile), then started again; the jobs run to their end."""
    root = tmp_path_factory.mktemp("outage")
    leases = {"long": LONG_LEASE_SECONDS, "short": SHORT_LEASE_SECONDS}
    with contextlib.ExitStack() as exits:
        cluster = exits.enter_context(postgres_cluster())
        managers = {
            variant: fault_stack(
                root / variant,
                workers=1,
                database_url=cluster.create_database(f"atelier_{variant}"),
                ATELIER_LEASE_SECONDS=str(lease),
            )
            for variant, lease in leases.items()
        }
        stacks = exits.enter_context(side_by_side(managers))
        exits.callback(lambda: None if cluster.running else cluster.start())

        jobs = {v: s.submit("counter", **OUTAGE_SPEC, **OUTAGE_JOB[v]) for v, s in stacks.items()}
        for variant, stack in stacks.items():
            wait_running(stack, jobs[variant], min_step=OUTAGE_SPEC["checkpoint_every"] + 2)
        runs: dict[str, OutageRun] = {}
        for variant, stack in stacks.items():
            job_id = jobs[variant]
            lease, committed = lease_of(stack, job_id), checkpoint_row(stack, job_id)
            assert lease.token is not None and committed is not None
            runs[variant] = OutageRun(
                variant=variant,
                stack=stack,
                job_id=job_id,
                scheduler_before=scheduler_pid(stack),
                first_token=lease.token,
                committed_step=committed.step or 0,
                step_at_outage=stack.client.get(job_id).step or 0,
                last_event_before=events_without_tokens(stack, job_id)[-1].id,
                log_offset=stack.log_path.stat().st_size,
                jobs_before=len(stack.client.list(limit=1000)),
            )

        cluster.stop()
        down_at = time.monotonic()
        probe = runs["long"]
        with ThreadPoolExecutor(max_workers=len(CLI_CALLS)) as pool:
            calls = {
                name: pool.submit(
                    _timed_cli, probe.stack, [a.format(job=probe.job_id) for a in args]
                )
                for name, args in CLI_CALLS.items()
            }
            probe.cli = {name: call.result() for name, call in calls.items()}
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        for run in runs.values():
            run.scheduler_alive_at_end_of_outage = alive(run.scheduler_before)
        cluster.start()

        for run in runs.values():
            run.view = _final_or_current(run.stack, run.job_id, timeout=90)
        time.sleep(1.0)  # a stale run's last words, if any
        follow_ups = {
            v: r.stack.submit("counter", steps=2, step_seconds=0) for v, r in runs.items()
        }
        for variant, run in runs.items():
            run.log_during = _log_since(run.stack, run.log_offset)
            run.scheduler_after = scheduler_pid(run.stack)
            run.follow_up = _final_or_current(run.stack, follow_ups[variant], timeout=30)
            run.jobs_after = len(run.stack.client.list(limit=1000))
        yield Outage(cluster, runs)


def _timed_cli(stack: Stack, args: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        result = run_cli(stack, *args, timeout=OUTAGE_SECONDS - 3)
    except Exception as error:  # a hang is an observation too
        return {"returncode": None, "stdout": "", "stderr": repr(error), "seconds": None}
    return {
        "returncode": result.returncode,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "seconds": round(time.monotonic() - started, 2),
    }


def _final_or_current(stack: Stack, job_id: str, timeout: float) -> JobView:
    """The job's view once it ended, or as it is after `timeout` (a test reports it)."""
    try:
        return stack.client.wait(job_id, timeout=timeout, poll=0.1)
    except TimeoutError:
        return stack.client.get(job_id)


def _log_since(stack: Stack, offset: int) -> str:
    with open(stack.log_path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def check_outlived(expect: Expectations, run: OutageRun) -> None:
    """Every process waited for the database: the same scheduler process throughout, no
    traceback, and the scheduler still schedules afterwards."""
    expect(
        run.scheduler_alive_at_end_of_outage and run.scheduler_after == run.scheduler_before,
        f"scheduler pid {run.scheduler_before} before, alive at the end of the outage: "
        f"{run.scheduler_alive_at_end_of_outage}, pid {run.scheduler_after} after",
    )
    check_quiet_log(expect, run.log_during, processes=1 + 2 * run.stack.workers)
    assert run.follow_up is not None
    expect.equal(run.follow_up.status, "succeeded", "a job submitted after the outage")


def check_quiet_log(
    expect: Expectations, text: str, processes: int, ignore: tuple[str, ...] = ()
) -> None:
    """An outage is logged in a line or two per process, not a traceback per retry:
    no traceback, and at most 2 warnings or errors of Atelier's loggers per process.
    Records of loggers starting with one of `ignore` are left out (Celery's own)."""
    records = [r for r in log_records(text) if not r.logger.startswith(ignore)]
    tracebacks = [r for r in records if "Traceback" in r.text]
    expect(
        not tracebacks,
        f"{len(tracebacks)} tracebacks in the stack's log from the outage on, the first: "
        f"{tracebacks[0].text.splitlines()[:8] if tracebacks else None}",
    )
    problems = [
        r.text.splitlines()[0] for r in records if r.problem and r.logger.startswith("atelier")
    ]
    expect(
        len(problems) <= 2 * processes,
        f"{len(problems)} warnings and errors from {processes} processes about the outage, "
        f"the first: {problems[:4]}",
    )


def check_outage_job(expect: Expectations, run: OutageRun) -> dict[str, Any]:
    view = run.view
    assert view is not None
    expect.equal(view.status, "succeeded", f"status ({view.error_code}: {view.error_message})")
    rows = output_rows(run.stack, run.job_id)
    check_one_result(expect, rows)
    check_rows_match_files(expect, rows)
    steps = OUTAGE_JOB[run.variant]["steps"]
    summary = summary_of(view) if any(r.role == "result" for r in rows) else {}
    expect.equal(summary.get("total"), float(sum(range(steps + 1))), "summary total")
    return summary


def test_database_outage_shorter_than_the_lease_is_ridden_through(database_outage: Outage) -> None:
    """Leases of 25 s, an outage of 15 s: the run keeps computing, its heartbeat catches
    up when the database is back, and it ends in its first attempt, never resumed."""
    run = database_outage.runs["long"]
    expect = Expectations(f"database down {OUTAGE_SECONDS:g} s, lease {LONG_LEASE_SECONDS:g} s")
    check_outlived(expect, run)
    summary = check_outage_job(expect, run)
    assert run.view is not None
    expect.equal(run.view.attempts, 1, "attempts")
    types = [e.type for e in events_without_tokens(run.stack, run.job_id)]
    expect.equal((types.count("resumed"), types.count("lease_expired")), (0, 0), "resumes")
    expect.equal(summary.get("started_from"), 0, "summary's started_from")
    # It kept computing while the database was away: had it waited for the database,
    # it would have taken the outage longer than its steps' sleep.
    nominal = OUTAGE_JOB["long"]["steps"] * OUTAGE_SPEC["step_seconds"]
    if run.view.started_at and run.view.finished_at:
        took = (run.view.finished_at - run.view.started_at).total_seconds()
        expect(
            took < nominal + OUTAGE_SECONDS / 2,
            f"the job took {took:.1f} s for {nominal:g} s of steps: it waited for the "
            f"database (at step {run.step_at_outage} when it went away)",
        )
    expect.verify()


def test_database_outage_longer_than_the_lease_resumes_from_the_checkpoint(
    database_outage: Outage,
) -> None:
    """Leases of 3 s, an outage of 15 s: the old run stops without writing anything
    after the outage, the scheduler expires its lease, and the job resumes from the last
    checkpoint committed before the outage."""
    run = database_outage.runs["short"]
    expect = Expectations(f"database down {OUTAGE_SECONDS:g} s, lease {SHORT_LEASE_SECONDS:g} s")
    check_outlived(expect, run)
    summary = check_outage_job(expect, run)
    view = run.view
    assert view is not None
    expect.equal(view.attempts, 2, "attempts")
    events = events_without_tokens(run.stack, run.job_id)
    types = [e.type for e in events]
    expect.equal((types.count("resumed"), types.count("lease_expired")), (1, 1), "resumes")
    every = OUTAGE_SPEC["checkpoint_every"]
    expect(
        view.resumed_from_step is not None
        and run.committed_step <= view.resumed_from_step <= run.committed_step + every,
        f"resumed from step {view.resumed_from_step}; the last checkpoint committed before "
        f"the outage was step {run.committed_step} (the job was at step {run.step_at_outage})",
    )
    expect.equal(summary.get("started_from"), view.resumed_from_step, "summary's started_from")
    try:
        tokened = event_rows(run.stack, run.job_id)
    except NoRunTokenColumn as error:
        expect(False, str(error))
    else:
        late = [
            (e.id, e.type)
            for e in tokened
            if e.run_token == run.first_token and e.id > run.last_event_before
        ]
        expect(not late, f"the old run wrote events after the outage: {late}")
    expect.verify()


def test_cli_during_a_database_outage_says_so_in_one_line(database_outage: Outage) -> None:
    """`atelier status`, `submit` and `list` while the database is down: exit code 3 and
    one line naming the database's address, no traceback, nothing stored."""
    run = database_outage.runs["long"]
    port = database_outage.cluster.port
    expect = Expectations("the CLI while the database is down")
    for name, result in run.cli.items():
        lines = result["stderr"].strip().splitlines()
        expect(
            result["returncode"] == 3
            and len(lines) == 1
            and lines[0].startswith(f"atelier: error: database unreachable at 127.0.0.1:{port}: "),
            f"atelier {name}: exit {result['returncode']} after {result['seconds']} s, "
            f"stderr {lines[:3]}{' ...' if len(lines) > 3 else ''}",
        )
    expect.equal(run.jobs_after, run.jobs_before + 1, "jobs stored (only the follow-up)")
    expect.verify()


# --- 4: the disk of ATELIER_HOME fills up ------------------------------------------------

DISK_MB = 64
ROOM_LEFT_BYTES = 1 << 20
"""Left free when the disk is filled: room for SQLite's small writes, not a checkpoint."""
DISK_JOB = {"steps": 300, "step_seconds": 0.05, "checkpoint_every": 5, "checkpoint_mb": 4.0}


def test_full_disk_fails_the_job_clearly_and_the_stack_goes_on(tmp_path: Path) -> None:
    """ATELIER_HOME (and the SQLite database in it) on a 64 MB tmpfs, filled up mid-job
    to 1 MB: the job ends `failed` with `disk_full` in one attempt, no temporary file is
    left, the scheduler process lives on and schedules; once space is freed, a job that
    checkpoints succeeds."""
    with contextlib.ExitStack() as exits:
        disk = exits.enter_context(small_disk(tmp_path / "disk", DISK_MB))
        stack = exits.enter_context(
            fault_stack(disk.path / "home", workers=1, log_path=tmp_path / "stack.log")
        )
        scheduler = scheduler_pid(stack)
        job_id = stack.submit("counter", **DISK_JOB)
        wait_running(stack, job_id, min_step=DISK_JOB["checkpoint_every"] + 1)
        left = disk.fill(ROOM_LEFT_BYTES)
        filled_at = time.monotonic()
        view = stack.wait(job_id, timeout=60)
        ended_after = time.monotonic() - filled_at
        leftovers = temporary_files(stack.settings.outputs_dir)

        expect = Expectations(f"disk full ({left} bytes left)")
        expect.equal(
            (view.status, view.error_code, view.attempts),
            ("failed", "disk_full", 1),
            f"status, error code, attempts ({view.error_message}; after {ended_after:.1f} s)",
        )
        expect(not leftovers, f"temporary files left: {[str(p) for p in leftovers]}")
        expect(alive(scheduler), f"the scheduler (pid {scheduler}) died")
        expect.equal(scheduler_pid(stack), scheduler, "scheduler pid")
        small = stack.wait(stack.submit("counter", steps=2, step_seconds=0), timeout=30)
        expect.equal(
            small.status, "succeeded", f"a small job on the full disk ({small.error_code})"
        )

        disk.free()
        after = stack.wait(stack.submit("counter", **{**DISK_JOB, "steps": 12}), timeout=60)
        expect.equal(after.status, "succeeded", f"a job once space is freed ({after.error_code})")
        expect.equal(scheduler_pid(stack), scheduler, "scheduler pid at the end")
        expect.verify()
