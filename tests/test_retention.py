"""Retention (scheduler.retention) on real stacks with the `counter` kind: `atelier prune`
removes old finished jobs' rows, events and files, keeps what other jobs still need,
keeps models on request and changes nothing in a dry run; `atelier du` adds up what the
files hold; a running job keeps two checkpoints. The embedded stack keeps its files in
ATELIER_HOME, the services stack (PostgreSQL, Redis) in an S3 bucket (moto's server).

Jobs are made old by moving their finished_at back: test setup, as is the model output
added to a counter job (the kind writes none; it goes in as the runtime records one)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from core.storage import DirectoryStore, ObjectStore, Storage
from db.models import Event, Job, Output, utcnow
from scheduler.client import JobNotFound
from scheduler.retention import PruneRequest, Retention, human_bytes, make_plan
from scheduler.specs import SpecError
from tests.fixtures.jobs import finished, running_stack
from tests.fixtures.object_store import S3Server, s3_server
from tests.fixtures.stacks import REPO, Stack, base_env

DAY = 86400.0
IDLE = "idle"
"""A queue no worker serves: a job submitted there stays pending."""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


REDIS_SLOT = 2  # beside the session's services stack (tests/fixtures/stacks.py)


@pytest.fixture(scope="module", params=["embedded", "services"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The embedded stack with files in ATELIER_HOME; the services one with a bucket."""
    home = tmp_path_factory.mktemp(f"retention-{request.param}")
    env: dict[str, str] = {}
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "services":
            s3: S3Server = request.getfixturevalue("s3")
            env = {**s3.env(), "ATELIER_STORAGE_URL": s3.bucket()}
            env["ATELIER_CACHE_DIR"] = str(home / "cache")
            for name, value in s3.env().items():  # this process' client reads the bucket too
                patch.setenv(name, value)
        with running_stack(request.param, home, redis_slot=REDIS_SLOT, **env) as running:
            assert isinstance(running.client.store, ObjectStore if env else DirectoryStore)
            yield running


# --- helpers -------------------------------------------------------------------------------


def store_of(stack: Stack) -> Storage:
    return stack.client.store


def files_of(stack: Stack, job_id: str) -> dict[str, int]:
    """Key -> bytes of the files under the job's folder, as the store lists them."""
    return store_of(stack).sizes(f"outputs/{job_id}")


def everything(stack: Stack) -> dict[str, int]:
    store = store_of(stack)
    return {**store.sizes("outputs"), **store.sizes("inputs")}


def rows_of(stack: Stack, job_ids: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """Job id -> (job rows, output rows, event rows)."""
    counted = {}
    with stack.client.readers() as session:
        for job_id in job_ids:
            counted[job_id] = tuple(
                session.scalar(select(func.count()).select_from(table).where(column == job_id)) or 0
                for table, column in ((Job, Job.id), (Output, Output.job_id), (Event, Event.job_id))
            )
    return counted  # type: ignore[return-value]


def make_old(stack: Stack, job_ids: Sequence[str], days: float = 2) -> None:
    with stack.client.sessions.begin() as session:
        session.execute(
            update(Job)
            .where(Job.id.in_(job_ids))
            .values(finished_at=utcnow() - timedelta(days=days))
        )


def prune_cli(stack: Stack, *args: str) -> dict:
    """`atelier prune --older-than 1d --json ARGS`'s report."""
    result = stack.cli("prune", "--older-than", "1d", "--json", *args, check=True)
    return json.loads(result.stdout)


def prune(stack: Stack, *, keep_models: bool = False, dry_run: bool = False) -> dict:
    """The same in this process (what the command runs, without its start-up time)."""
    request = PruneRequest(DAY, keep_models=keep_models, dry_run=dry_run)
    return Retention(stack.client).prune(request).as_json()


def pruned(report: dict) -> dict[str, str]:
    return {job["id"]: job["status"] for job in report["jobs"]}


def kept(report: dict) -> dict[str, str]:
    return {job["id"]: job["reason"] for job in report["kept"]}


def quick(stack: Stack, **spec: object) -> str:
    return stack.submit("counter", **{"steps": 4, "step_seconds": 0, **spec})


def add_model(stack: Stack, job_id: str) -> str:
    """A model output in the job's run folder, stored and recorded as the runtime does."""
    view = stack.client.get(job_id)
    run = next(o.key for o in view.outputs if o.role == "result").split("/")[2]
    stored = store_of(stack).publish(
        f"outputs/{job_id}/{run}/model/generator.keras",
        lambda path: Path(path).write_bytes(b"weights " * 500),
    )
    with stack.client.sessions.begin() as session:
        session.add(
            Output(
                job_id=job_id, role="model", name="generator.keras", key=stored.key,
                sha256=stored.sha256, bytes=stored.bytes,
            )
        )  # fmt: skip
    return stored.key


ROLE_OF_FOLDER = {"checkpoints": "checkpoint"}
"""A run's checkpoints are in `checkpoints/`; other outputs in a folder named by role."""


def by_role(files: dict[str, int]) -> dict[str, dict[str, int]]:
    roles: dict[str, dict[str, int]] = {}
    for key, size in files.items():
        folder = key.split("/")[3]
        role = roles.setdefault(ROLE_OF_FOLDER.get(folder, folder), {"files": 0, "bytes": 0})
        role["files"] += 1
        role["bytes"] += size
    return roles


# --- prune ---------------------------------------------------------------------------------


def test_prune_removes_old_jobs_rows_events_and_files(stack: Stack, tmp_path: Path) -> None:
    shared, own = tmp_path / "shared.txt", tmp_path / "own.txt"
    shared.write_text("named by an old job and by a recent one")
    own.write_text("named by one old job only")
    old_ok = quick(stack, checkpoint_every=2, note=str(shared))
    old_own = quick(stack, note=str(own))
    old_failed = quick(stack, steps=6, checkpoint_every=1, nan_at_step=4)
    old_cancelled = stack.client.submit("counter", {"steps": 2}, queue=IDLE)
    assert stack.client.cancel(old_cancelled) == "cancelled"
    recent = quick(stack, note=str(shared))
    for job_id in (old_ok, old_own, recent):
        finished(stack, job_id)
    assert stack.wait(old_failed).status == "failed"
    old = [old_ok, old_own, old_failed, old_cancelled]
    make_old(stack, old)
    shared_key, own_key = (stack.client.get(j).spec["note"] for j in (old_ok, old_own))
    assert stack.client.get(recent).spec["note"] == shared_key
    inputs = store_of(stack).sizes("inputs")
    assert inputs == {shared_key: shared.stat().st_size, own_key: own.stat().st_size}

    # du: the recorded sizes are the files' sizes, per role; inputs apart, counted once
    usage = Retention(stack.client).usage().as_json()  # `du --json` prints this
    listed = {job["id"]: job for job in usage["jobs"]}
    assert set(listed) == {old_ok, old_own, old_failed, recent}, "a job holding nothing: not listed"
    for job_id in (old_ok, old_own, old_failed, recent):
        files = files_of(stack, job_id)
        assert (listed[job_id]["files"], listed[job_id]["bytes"]) == (
            len(files), sum(files.values())
        )  # fmt: skip
        assert listed[job_id]["roles"] == by_role(files)
    assert by_role(files_of(stack, old_failed))["checkpoint"]["files"] == 2
    assert listed[old_ok]["inputs"] == {"files": 1, "bytes": inputs[shared_key]}
    assert usage["inputs"] == {"files": 2, "bytes": sum(inputs.values())}
    assert [job["bytes"] for job in usage["jobs"]] == sorted(
        (job["bytes"] for job in usage["jobs"]), reverse=True
    )  # largest first
    detail = stack.cli("du", old_ok[:6], check=True).stdout.splitlines()
    roles = by_role(files_of(stack, old_ok))
    assert detail[0] == f"job {old_ok}  (counter, succeeded)"
    checkpoint_size = human_bytes(roles["checkpoint"]["bytes"])
    assert detail[1].split() == ["checkpoint", *checkpoint_size.split(), "2", "files"]
    assert detail[-1].split()[:5] == [
        "inputs",
        *human_bytes(inputs[shared_key]).split(),
        "1",
        "file",
    ]

    # a dry run reports exactly what a prune frees, and changes nothing
    before_files, before_rows = everything(stack), rows_of(stack, [*old, recent])
    report = prune_cli(stack, "--dry-run")
    assert pruned(report) == {
        old_ok: "succeeded", old_own: "succeeded", old_failed: "failed",
        old_cancelled: "cancelled",
    }  # fmt: skip
    assert report["by_status"] == {"succeeded": 2, "failed": 1, "cancelled": 1}
    for job in report["jobs"]:
        files = files_of(stack, job["id"])
        assert (job["files"], job["bytes"]) == (len(files), sum(files.values()))
    assert report["inputs"] == {"files": 1, "bytes": inputs[own_key]}
    outputs = [size for job_id in old for size in files_of(stack, job_id).values()]
    assert (report["files"], report["bytes"]) == (len(outputs) + 1, sum(outputs) + inputs[own_key])
    assert report["kept"] == [] and report["dry_run"] is True
    assert everything(stack) == before_files
    assert rows_of(stack, [*old, recent]) == before_rows
    assert all(jobs == 1 and events >= 2 for jobs, _, events in before_rows.values())

    # the prune itself
    printed = stack.cli("prune", "--older-than", "1d", check=True).stdout.splitlines()
    assert printed[-1] == (
        f"pruned 4 jobs (succeeded 2, failed 1, cancelled 1): {report['files']} files, "
        f"{human_bytes(report['bytes'])} freed"
    )
    assert sum(line.startswith("pruned ") for line in printed) == 4 + 1 + 1  # jobs, inputs, sum
    assert rows_of(stack, old) == dict.fromkeys(old, (0, 0, 0))
    assert all(files_of(stack, job_id) == {} for job_id in old)
    if isinstance(store_of(stack), DirectoryStore):
        assert not any((stack.settings.outputs_dir / job_id).exists() for job_id in old)
    assert store_of(stack).sizes("inputs") == {shared_key: inputs[shared_key]}
    with pytest.raises(JobNotFound):
        stack.client.get(old_ok)
    # the recent job is untouched: rows, events, files
    assert rows_of(stack, [recent]) == {recent: before_rows[recent]}
    left = {k: v for k, v in before_files.items() if f"/{recent}/" in k or k == shared_key}
    assert everything(stack) == left
    assert prune(stack)["jobs"] == []


def test_keep_models_keeps_the_row_its_models_and_its_history(stack: Stack) -> None:
    job_id = quick(stack, steps=6, checkpoint_every=2)
    finished(stack, job_id)
    model_key = add_model(stack, job_id)
    make_old(stack, [job_id])
    history = [event["type"] for event in stack.client.events(job_id)]
    assert "progress" in history
    files = files_of(stack, job_id)
    assert sorted(by_role(files)) == ["checkpoint", "model", "result", "tensorboard"]

    report = prune_cli(stack, "--keep-models")
    others = {key: size for key, size in files.items() if key != model_key}
    assert report["jobs"] == [
        {"id": job_id, "status": "succeeded", "files": len(others), "bytes": sum(others.values())}
    ]
    assert report["keep_models"] is True
    view = stack.client.get(job_id)
    assert view.status == "succeeded"
    assert [(o.role, o.name, o.key) for o in view.outputs] == [
        ("model", "generator.keras", model_key)
    ]
    assert files_of(stack, job_id) == {model_key: files[model_key]}
    assert [event["type"] for event in stack.client.events(job_id)] == [
        kind for kind in history if kind != "progress"
    ]
    if isinstance(store_of(stack), DirectoryStore):  # no empty folders left behind
        run = stack.settings.home / Path(model_key).parent.parent
        assert [p.name for p in run.iterdir()] == ["model"]
    assert prune(stack, keep_models=True)["jobs"] == [], "nothing left to trim"
    with pytest.raises(SpecError, match="kept no checkpoint"):
        stack.client.submit("counter", {}, continues=job_id)

    # a plain prune takes the rest
    report = prune(stack)
    assert report["jobs"] == [
        {"id": job_id, "status": "succeeded", "files": 1, "bytes": files[model_key]}
    ]
    assert rows_of(stack, [job_id]) == {job_id: (0, 0, 0)}
    assert files_of(stack, job_id) == {}


def test_a_job_still_needed_is_kept_until_nothing_needs_it(stack: Stack) -> None:
    continued = quick(stack, checkpoint_every=2)  # `--from` needs a checkpoint
    waited_for, named, linked, first = (quick(stack) for _ in range(4))
    second = stack.client.submit("counter", {"steps": 2, "step_seconds": 0}, after=first)
    ran_after = stack.client.submit("counter", {"steps": 2, "step_seconds": 0}, after=linked)
    for job_id in (continued, waited_for, named, linked, first, second, ran_after):
        finished(stack, job_id)
    # jobs not yet ended (pending on a queue no worker serves) that need old ones
    waits = stack.client.submit("counter", {"steps": 2}, after=waited_for, queue=IDLE)
    continues = stack.client.submit("counter", {}, continues=continued, queue=IDLE)
    names = stack.client.submit("counter", {"steps": 2, "source": named}, queue=IDLE)
    old = [waited_for, continued, named, linked, first, second]
    make_old(stack, old)
    needed = {
        waited_for: f"job {waits} (pending) depends on it (--after)",
        continued: f"job {continues} (pending) continues from it (--from)",
        named: f"job {names} (pending) names it in field 'source'",
        linked: f"job {ran_after} (kept) depends on it (--after)",  # a row that stays links
    }

    report = prune(stack, dry_run=True)
    assert kept(report) == needed
    assert set(pruned(report)) == {first, second}, "jobs linked to each other go together"
    trimming = prune(stack, dry_run=True, keep_models=True)  # rows stay: only live jobs hold
    assert set(kept(trimming)) == {waited_for, continued, named}
    assert set(pruned(trimming)) == {linked, first, second}

    with stack.client.sessions() as session:  # rolled back: no notifier sees the URL
        notify = {"notify": ["http://127.0.0.1:9/"], "notified_at": None}
        session.execute(update(Job).where(Job.id == first).values(**notify))
        plan = make_plan(session, PruneRequest(DAY), utcnow())
        session.rollback()
    assert plan.held[first] == "its notification is not delivered yet"
    assert set(plan.prune) == {second}, "a job that depends on one kept may go"

    held_files = {job_id: files_of(stack, job_id) for job_id in needed}
    held_rows = rows_of(stack, list(needed))
    report = prune(stack)
    assert kept(report) == needed and set(pruned(report)) == {first, second}
    lines = Retention(stack.client).prune(PruneRequest(DAY, dry_run=True)).lines()
    assert f"kept {named}: job {names} (pending) names it in field 'source'" in lines
    assert lines[-1].endswith("; kept 4 jobs still needed; nothing changed (dry run)")
    assert rows_of(stack, [first, second]) == {first: (0, 0, 0), second: (0, 0, 0)}
    assert {job_id: files_of(stack, job_id) for job_id in needed} == held_files
    assert rows_of(stack, list(needed)) == held_rows
    assert stack.client.get(waits).depends_on == waited_for

    # once the jobs that needed them have ended and are old too, all go
    for job_id in (waits, continues, names):
        assert stack.client.cancel(job_id) == "cancelled"
    make_old(stack, [waits, continues, names, ran_after])
    report = prune(stack)
    assert kept(report) == {}
    assert set(pruned(report)) == {*needed, waits, continues, names, ran_after}
    assert all(files_of(stack, job_id) == {} for job_id in needed)


def test_files_no_row_names_are_removed(stack: Stack) -> None:
    """What a prune cut short between its rows and its files leaves: a job folder whose
    job is gone. Folders not named like a job id are not Atelier's to remove."""
    store = store_of(stack)
    orphan = store.publish("outputs/0123456789abcdef/run1/sample/grid.png",
                           lambda path: Path(path).write_bytes(b"x" * 300))  # fmt: skip
    foreign = store.publish(
        "outputs/not-a-job/notes.txt", lambda path: Path(path).write_text("mine")
    )
    report = prune(stack, dry_run=True)
    assert report["orphans"] == {"files": 1, "bytes": 300} and report["jobs"] == []
    assert store.exists(orphan.key)
    printed = stack.cli("prune", "--older-than", "1d", check=True).stdout.splitlines()
    assert printed[0] == "pruned files of jobs no longer in the database: 1 file, 300 B"
    assert printed[-1] == "pruned 0 jobs: 1 file, 300 B freed"
    assert not store.exists(orphan.key) and store.exists(foreign.key)
    store.delete_folder("outputs/not-a-job")
    assert store.sizes("outputs/not-a-job") == {}


BAD_INPUT = {
    ("--older-than", "abc"):
        "--older-than must be a positive duration like 90s, 90m, 12h or 30d, got 'abc'",
    ("--older-than", "0d"):
        "--older-than must be a positive duration like 90s, 90m, 12h or 30d, got '0d'",
    ("--older-than", "1d", "--status", "running"):
        "--status: running jobs have not ended (prune takes succeeded, failed, cancelled)",
    ("--older-than", "1d", "--status", "failed,done"):
        "--status: unknown status 'done' (prune takes succeeded, failed, cancelled)",
}  # fmt: skip


@pytest.mark.parametrize("args", list(BAD_INPUT), ids=" ".join)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "prune", *args],
        env=base_env(home), capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [f"atelier: error: {BAD_INPUT[args]}"]
    assert not home.exists(), "refused before the database is opened"


# --- checkpoints while a job runs ----------------------------------------------------------


def test_a_job_keeps_its_two_newest_checkpoints_and_succeeded_keeps_them(stack: Stack) -> None:
    job_id = quick(stack, steps=8, checkpoint_every=1)
    view = finished(stack, job_id)
    checkpoints = {o.name: o for o in view.outputs if o.role == "checkpoint"}
    assert {name: o.step for name, o in checkpoints.items()} == {
        "latest.npz": 8, "previous.npz": 7
    }  # fmt: skip
    on_store = {k: n for k, n in files_of(stack, job_id).items() if "/checkpoints/" in k}
    assert on_store == {o.key: o.bytes for o in checkpoints.values()}
    assert sorted(Path(key).name for key in on_store) == ["step_00000007.npz", "step_00000008.npz"]
    usage = json.loads(stack.cli("du", job_id, "--json", check=True).stdout)
    assert [job["roles"] for job in usage["jobs"]] == [by_role(files_of(stack, job_id))]
    assert usage["jobs"][0]["roles"]["checkpoint"] == {"files": 2, "bytes": sum(on_store.values())}
    make_old(stack, [job_id])
    assert set(pruned(prune(stack))) == {job_id}


# --- the store's folder helpers ------------------------------------------------------------


@pytest.fixture(params=["directory", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Storage:
    if request.param == "directory":
        return DirectoryStore(tmp_path / "home")
    s3: S3Server = request.getfixturevalue("s3")
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return ObjectStore(s3.bucket(), tmp_path / "cache")


def test_a_folder_is_listed_sized_and_removed_but_for_what_is_kept(store: Storage) -> None:
    def put(key: str, size: int) -> str:
        return store.publish(key, lambda path: Path(path).write_bytes(b"x" * size)).key

    kept = put("outputs/j1/r1/model/g.keras", 5)
    put("outputs/j1/r1/sample/a.png", 7)
    put("outputs/j1/r2/checkpoints/step_1.npz", 11)
    other = put("outputs/j2/r1/sample/a.png", 3)
    put("outputs/j10/x.txt", 1)
    assert store.folders("outputs") == ["j1", "j10", "j2"]
    assert store.folders("outputs/j1/r1") == ["model", "sample"]
    assert store.folders("nothing") == [] and store.sizes("nothing") == {}
    assert store.sizes("outputs/j1") == {
        kept: 5, "outputs/j1/r1/sample/a.png": 7, "outputs/j1/r2/checkpoints/step_1.npz": 11
    }  # fmt: skip
    store.delete_folder("outputs/j1", keep={kept})
    assert store.sizes("outputs/j1") == {kept: 5}
    assert store.folders("outputs/j1") == ["r1"] and store.folders("outputs/j1/r1") == ["model"]
    store.delete_folder("outputs/j1")
    assert store.sizes("outputs") == {other: 3, "outputs/j10/x.txt": 1}
    assert store.folders("outputs") == ["j10", "j2"]
    if isinstance(store, DirectoryStore):
        assert not (store.root / "outputs" / "j1").exists()


def test_sizes_read_for_people() -> None:
    assert [human_bytes(n) for n in (0, 999, 1000, 1234, 999_949, 999_950, 1_200_000)] == [
        "0 B", "999 B", "1.0 kB", "1.2 kB", "999.9 kB", "1.0 MB", "1.2 MB"
    ]  # fmt: skip
    assert human_bytes(3 * 10**18) == "3000.0 PB"
