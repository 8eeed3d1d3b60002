"""A worker process killed with SIGKILL in the middle of a job, for every kind case with
a `kill` plan (tests/fixtures/kind_cases.py): after the lease runs out the job runs again
on another worker process, resumes from its last checkpoint and succeeds, with exactly
one final result per output and the bytes and metrics of an uninterrupted run."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.fixtures.jobs import Stacks, events_of, finished, wait_running
from tests.fixtures.kind_cases import RESUMABLE, KindCase, KindRuns, output_files
from tests.fixtures.local_context import LocalContext
from tests.fixtures.tensorboard import assert_tensorboard_shows_the_run_once

KILLS = [
    pytest.param(case, backend, id=f"{case.name}-{backend}")
    for case in RESUMABLE
    if case.resume is not None and case.resume.kill is not None
    for backend in case.resume.kill.backends
]

EVENT_KEYS = {"at", "type", "step", "epoch", "notes"}
"""What a metrics event holds besides the metrics."""

UNCOMPARED = {"checkpoint", "tensorboard"}
"""Output roles whose bytes differ between runs (event files hold wall times)."""

_uninterrupted: dict[str, LocalContext] = {}


def uninterrupted(case: KindCase, kind_runs: KindRuns) -> LocalContext:
    """The killed job's spec run in this process, without interruption (once per case)."""
    assert case.resume is not None and case.resume.kill is not None
    if case.name not in _uninterrupted:
        spec = case.spec(kind_runs.inputs, **case.resume.kill.changes)
        ctx = LocalContext(kind_runs.folder / "uninterrupted" / case.name)
        _uninterrupted[case.name] = case.run(spec, ctx)
    return _uninterrupted[case.name]


@pytest.mark.parametrize(("case", "backend"), KILLS)
def test_killed_worker_job_resumes_from_its_checkpoint_to_identical_bytes(
    case: KindCase, backend: str, stacks: Stacks, kind_runs: KindRuns, tmp_path: Path
) -> None:
    assert case.resume is not None and case.resume.kill is not None
    stack = stacks.get(backend)  # the session's `stack` of that backend
    kill = case.resume.kill
    every = kill.checkpoint_every
    values = case.values_for(kind_runs.inputs, **kill.changes, checkpoint_every=every)
    job_id = stack.client.submit(case.kind, values)
    running = wait_running(stack, job_id, min_step=kill.after, timeout=120)
    os.kill(running.worker_pid, signal.SIGKILL)
    reference = uninterrupted(case, kind_runs)  # while the killed run's lease runs out

    view = finished(stack, job_id, timeout=300)
    assert view.attempts == 2
    total = len(reference.progress_calls)
    # The last checkpoint before the kill: at or after the last one the job had finished
    # when it reported `running.step` (a step's progress comes before its checkpoint), and
    # at most one interval later (the kill came at once).
    assert view.resumed_from_step is not None and view.resumed_from_step % every == 0
    assert running.step is not None and running.step >= kill.after
    passed = (running.step - 1) // every * every
    assert passed <= view.resumed_from_step <= running.step + every
    assert view.resumed_from_step < total
    assert (view.step, view.total_steps) == (total, total)
    assert len(events_of(stack, job_id, "resumed")) == 1
    started = events_of(stack, job_id, "started")
    assert len(started) == 2 and started[1]["pid"] != running.worker_pid

    results = [(o.role, o.name) for o in view.outputs if o.role not in UNCOMPARED]
    assert len(results) == len(set(results)), "one final result per output"
    files = {
        f"{o.role}/{o.name}": Path(o.location).read_bytes()
        for o in view.outputs
        if o.role not in UNCOMPARED
    }
    assert files == output_files(reference)
    # A re-run epoch records its metrics again: the last record of each step counts.
    recorded = {
        event["step"]: (event["epoch"], {k: v for k, v in event.items() if k not in EVENT_KEYS})
        for event in events_of(stack, job_id, "metrics")
    }
    assert recorded == {e.step: (e.epoch, e.values) for e in reference.metric_events}
    notes = {event["step"]: event.get("notes", {}) for event in events_of(stack, job_id, "metrics")}
    assert notes == {e.step: e.notes for e in reference.metric_events}
    assert_tensorboard_shows_the_run_once(stack, job_id, reference, tmp_path)
