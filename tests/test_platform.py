"""The platform end to end, on both backends, with the fast `counter` test kind:
real `atelier up` processes, real Celery workers, real Redis and database."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

from core.celery_app import make_app
from db import jobs
from scheduler.client import JobView
from tests.fixtures.jobs import events_of, wait_running
from tests.fixtures.stacks import Stack
from worker.summaries import segment_name


def summary(view: JobView) -> dict:
    [result] = [o for o in view.outputs if o.role == "result"]
    return json.loads(Path(result.location).read_text())


def test_job_runs_to_success_with_its_outputs(stack: Stack) -> None:
    job_id = stack.submit("counter", steps=12, step_seconds=0.01)
    view = stack.wait(job_id)
    assert view.status == "succeeded", view.error_message
    assert (view.attempts, view.progress, view.step) == (1, 1.0, 12)
    assert summary(view) == {"total": 78.0, "started_from": 0, "attempt": 1}
    # checkpoint_every 5 of 12 steps, and one at the last step (a finished job can be
    # continued from it): the latest (step 12) and the one before (step 10)
    # TensorBoard's events go with each checkpoint: steps 0-5 (the spec at 0), 6-10, 11-12
    events = [segment_name(first) for first in (0, 6, 11)]
    by_name = {(o.role, o.name): o for o in view.outputs}
    assert sorted(by_name) == [
        ("checkpoint", "latest.npz"), ("checkpoint", "previous.npz"), ("result", "summary.json"),
        *(("tensorboard", name) for name in events),
    ]  # fmt: skip
    assert [by_name["tensorboard", name].step for name in events] == [5, 10, 12]
    assert [by_name["checkpoint", name].step for name in ("latest.npz", "previous.npz")] == [12, 10]
    run = Path(stack.settings.outputs_dir / job_id / view.outputs[0].location.split("/")[-3])
    for output in view.outputs:  # every file in the run's own folder, as recorded
        path = Path(output.location)
        assert output.key == path.relative_to(stack.settings.home).as_posix()
        assert path.is_relative_to(run) and output.bytes == path.stat().st_size
        assert hashlib.sha256(path.read_bytes()).hexdigest() == output.sha256
    files = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert files == {
        "checkpoints/step_00000010.npz", "checkpoints/step_00000012.npz", "result/summary.json",
        *(f"tensorboard/{name}" for name in events),
    }  # fmt: skip


def test_failed_attempt_is_retried_from_its_checkpoint(stack: Stack) -> None:
    job_id = stack.submit("counter", steps=20, step_seconds=0.01, fail_on_attempts=[1])
    view = stack.wait(job_id)
    assert view.status == "succeeded"
    assert view.attempts == 2
    # The first attempt failed during step 10, before its checkpoint: step 5 is the latest.
    assert summary(view)["started_from"] == 5
    assert view.resumed_from_step == 5
    assert summary(view)["total"] == 210.0
    types = [e["type"] for e in stack.client.events(job_id)]
    assert types.count("retry") == 1 and types.count("started") == 2


def test_attempts_are_bounded(stack: Stack) -> None:
    job_id = stack.client.submit(
        "counter", {"steps": 4, "step_seconds": 0, "fail_on_attempts": [1, 2]}, max_attempts=2
    )
    view = stack.wait(job_id)
    assert (view.status, view.attempts, view.error_code) == ("failed", 2, "error")
    assert "planned failure" in view.error_message


def test_nan_loss_fails_without_retries_and_worker_goes_on(stack: Stack) -> None:
    job_id = stack.submit("counter", steps=6, step_seconds=0, nan_at_step=3)
    view = stack.wait(job_id)
    assert (view.status, view.attempts, view.error_code) == ("failed", 1, "nan_loss")
    assert view.error_message == "loss became NaN at step 3"
    follow_up = stack.wait(stack.submit("counter", steps=2, step_seconds=0))
    assert follow_up.status == "succeeded"


def test_cancel_a_running_job(stack: Stack) -> None:
    job_id = stack.submit("counter", steps=400, step_seconds=0.05)
    wait_running(stack, job_id, min_step=2)
    assert stack.client.cancel(job_id) == "stopping"
    view = stack.wait(job_id, timeout=30)
    assert view.status == "cancelled"
    assert view.step < 400
    assert not [o for o in view.outputs if o.role == "result"]


def test_pause_checkpoints_and_resume_continues(stack: Stack) -> None:
    job_id = stack.submit("counter", steps=60, step_seconds=0.05, checkpoint_every=1000)
    wait_running(stack, job_id, min_step=3)
    assert stack.client.pause(job_id) == "pausing"
    stack.wait_for(lambda: stack.client.get(job_id).status == "paused", timeout=30, what="pause")
    paused = stack.client.get(job_id)
    checkpoint = next(o for o in paused.outputs if o.role == "checkpoint")
    assert 3 <= checkpoint.step < 60  # written on the pause request, not on the interval
    assert stack.client.resume(job_id) == "pending"
    view = stack.wait(job_id)
    assert view.status == "succeeded"
    assert summary(view)["started_from"] == checkpoint.step
    assert summary(view)["total"] == sum(range(61))
    assert view.attempts == 1  # a pause is not a failed attempt


def test_after_waits_for_success_and_cancels_on_failure(stack: Stack) -> None:
    first = stack.submit("counter", steps=10, step_seconds=0.05)
    second = stack.client.submit("counter", {"steps": 2, "step_seconds": 0}, after=first)
    # Slow enough to be still pending or running when the orphan names it (an --after a
    # job that already failed is refused at submit: the test below).
    failing = stack.submit("counter", steps=4, step_seconds=0.5, nan_at_step=2)
    orphan = stack.client.submit("counter", {"steps": 2}, after=failing)

    a, b = stack.wait(first), stack.wait(second)
    assert (a.status, b.status) == ("succeeded", "succeeded")
    assert b.started_at >= a.finished_at
    c = stack.wait(orphan)
    assert c.status == "cancelled"
    assert c.error_message == f"dependency {failing} failed"
    assert c.started_at is None


def test_after_a_failed_job_is_refused_at_submit(stack: Stack) -> None:
    failing = stack.submit("counter", steps=2, step_seconds=0, nan_at_step=1)
    stack.wait(failing)
    result = stack.cli("submit", "counter", "--after", failing)
    assert result.returncode == 2
    assert result.stderr.strip() == f"atelier: error: --after {failing}: that job already failed"


def test_same_job_delivered_twice_runs_once(stack: Stack) -> None:
    job_id = stack.submit("counter", steps=40, step_seconds=0.05)
    wait_running(stack, job_id)
    app = make_app(stack.settings)
    app.send_task("atelier.counter", args=[job_id], queue="gpu")  # while it runs
    view = stack.wait(job_id)
    app.send_task("atelier.counter", args=[job_id], queue="gpu")  # after it ended
    stack.wait(stack.submit("counter", steps=1, step_seconds=0))  # both deliveries drained
    stack.wait(stack.submit("counter", steps=1, step_seconds=0))
    assert view.status == "succeeded"
    assert len(events_of(stack, job_id, "started")) == 1
    assert stack.client.get(job_id).attempts == 1


def test_killed_worker_process_job_resumes_elsewhere(stack: Stack) -> None:
    job_id = stack.submit("counter", steps=80, step_seconds=0.05, checkpoint_every=5)
    running = wait_running(stack, job_id, min_step=12)
    os.kill(running.worker_pid, signal.SIGKILL)
    view = stack.wait(job_id, timeout=90)
    assert view.status == "succeeded"
    assert view.attempts == 2
    resumed = summary(view)["started_from"]
    assert resumed >= 10 and resumed % 5 == 0
    assert view.resumed_from_step == resumed
    assert summary(view)["total"] == sum(range(81))
    assert len([o for o in view.outputs if o.role == "result"]) == 1
    assert events_of(stack, job_id, "started")[1]["pid"] != running.worker_pid


def test_priority_decides_order_and_capacity_bounds_the_queue(stack: Stack) -> None:
    blockers = [stack.submit("counter", steps=400, step_seconds=0.05) for _ in range(2)]
    for blocker in blockers:
        wait_running(stack, blocker)
    quick = {"steps": 1, "step_seconds": 0}
    low = stack.client.submit("counter", quick, priority=0)
    high = stack.client.submit("counter", quick, priority=10)
    # Both worker slots are busy: nothing more may sit in Redis.
    for _ in range(10):
        assert stack.client.get(low).status == "pending"
        assert stack.client.get(high).status == "pending"
    # Free one slot: the high-priority job takes it; the low one waits for that slot
    # again, since the other still runs a blocker. (Freeing both at once would start both
    # side by side, in either order.)
    stack.client.cancel(blockers[0])
    high_view, low_view = stack.wait(high), stack.wait(low)
    assert low_view.started_at >= high_view.finished_at
    assert stack.client.get(blockers[1]).status == "running"
    stack.client.cancel(blockers[1])


def test_bad_input_is_refused_with_one_line_and_nothing_stored(stack: Stack) -> None:
    before = len(stack.client.list(limit=1000))
    cases = {
        ("submit", "nope"): "unknown job kind 'nope'",
        ("submit", "counter", "--set", "colour=red"): "unknown field 'colour'",
        ("submit", "counter", "--set", "steps=-3"): "field 'steps': Input should be greater than 0",
        ("submit", "counter", "--set", "steps=many"): "should be a valid integer",
        ("submit", "counter", "--set", "steps"): "--set expects key=value",
        ("submit", "counter", "--after", "ffffffffffff"): "no job 'ffffffffffff'",
    }
    for args, expected in cases.items():
        result = stack.cli(*args)
        assert result.returncode == 2, args
        assert expected in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert len(stack.client.list(limit=1000)) == before


def test_cli_submit_status_wait(stack: Stack) -> None:
    submitted = stack.cli("submit", "counter", "--set", "steps=3", "--json", check=True)
    job_id = json.loads(submitted.stdout)["id"]
    waited = stack.cli("wait", job_id, "--timeout", "60")
    assert waited.returncode == 0 and waited.stdout.strip() == f"{job_id} succeeded"
    status = json.loads(stack.cli("status", job_id, "--json", check=True).stdout)
    assert (status["status"], status["kind"], status["step"]) == ("succeeded", "counter", 3)
    outputs = stack.cli("outputs", job_id, check=True).stdout
    assert "summary.json" in outputs
    failing = stack.submit("counter", steps=2, step_seconds=0, nan_at_step=1)
    assert stack.cli("wait", failing, "--timeout", "60").returncode == 1


def test_out_of_memory_fails_without_retries(stack: Stack) -> None:
    view = stack.wait(stack.submit("counter", steps=4, step_seconds=0, oom_at_step=2))
    assert (view.status, view.attempts, view.error_code) == ("failed", 1, "out_of_memory")
    assert view.error_message == "MemoryError: could not allocate the activations"


def test_input_files_are_stored_at_submit(stack: Stack, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("first version")
    job_id = stack.submit("counter", steps=2, step_seconds=0, note=str(note))
    note.write_text("changed after submit")  # the job must read what was submitted
    view = stack.wait(job_id)
    assert summary(view)["note"] == "first version"
    stored = view.spec["note"]
    assert stored.startswith("inputs/") and stored.endswith(".txt")
    assert (stack.settings.home / stored).read_text() == "first version"


def test_a_job_reading_another_jobs_output_waits_for_it(stack: Stack) -> None:
    producer = stack.submit("counter", steps=10, step_seconds=0.05)
    consumer = stack.submit("counter", steps=1, step_seconds=0, source=producer[:8])
    view = stack.wait(consumer)
    assert view.status == "succeeded"
    assert view.depends_on == producer and view.spec["source"] == producer
    assert summary(view)["source_total"] == 55.0
    assert view.started_at >= stack.client.get(producer).finished_at


def test_model_references_are_checked_at_submit(stack: Stack) -> None:
    failed = stack.submit("counter", steps=1, step_seconds=0, nan_at_step=1)
    stack.wait(failed)
    with stack.client.sessions.begin() as session:  # a job of another kind, never run
        other = jobs.create_job(session, kind="dcgan", spec={}, queue="nowhere").id
    cases = {
        "nothere": "counter: field 'source': no job or model output 'nothere'",
        failed: f"counter: field 'source': job {failed} failed",
        other: f"counter: field 'source': job {other} is a dcgan job, expected counter",
    }
    for source, expected in cases.items():
        result = stack.cli("submit", "counter", "--set", f"source={source}")
        assert result.returncode == 2
        assert result.stderr.strip() == f"atelier: error: {expected}"
