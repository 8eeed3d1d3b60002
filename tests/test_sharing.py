"""Sharing one pool, through a real one-slot stack on both backends: preemption by
priority, time limits across a SIGKILL, fair share between owners and its cap, and
continuing a finished job from its final checkpoint."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.client import Client, JobView
from tests.fixtures.jobs import events_of, running_stack, wait_running
from tests.fixtures.stacks import Stack

PREEMPT_AFTER = 2.0
REDIS_SLOT = 1


@pytest.fixture(scope="module", params=["embedded", "services"])
def pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One worker slot, and a short grace before preemption."""
    home = tmp_path_factory.mktemp(f"pool-{request.param}")
    with running_stack(
        request.param, home, workers=1, redis_slot=REDIS_SLOT,
        ATELIER_PREEMPT_AFTER_SECONDS=str(PREEMPT_AFTER),
    ) as running:  # fmt: skip
        yield running


def summary(view: JobView) -> dict:
    [result] = [o for o in view.outputs if o.role == "result"]
    return json.loads(Path(result.location).read_text())


def at(event: dict) -> datetime:
    return datetime.fromisoformat(event["at"])


def test_a_higher_priority_job_preempts_a_lower_one(pool: Stack) -> None:
    low = pool.submit("counter", steps=60, step_seconds=0.05, checkpoint_every=5)
    wait_running(pool, low)
    high = pool.client.submit("counter", {"steps": 5, "step_seconds": 0.01}, priority=5)
    high_view, low_view = pool.wait(high), pool.wait(low)
    assert (high_view.status, low_view.status) == ("succeeded", "succeeded")
    assert high_view.finished_at < low_view.finished_at
    assert low_view.attempts == 1, "a preemption uses no attempt"
    [preempted] = events_of(pool, low, "preempted")
    assert preempted["by"] == high
    first_start = events_of(pool, low, "started")[0]
    assert (at(preempted) - at(first_start)).total_seconds() >= PREEMPT_AFTER  # its grace
    [released] = events_of(pool, low, "released")
    assert released["reason"] == "preempt" and released["to"] == "pending"
    resumed = summary(low_view)["started_from"]
    assert resumed > 0 and low_view.resumed_from_step == resumed
    assert summary(low_view)["total"] == sum(range(61))


def test_no_preemption_for_equal_priority_or_a_no_preempt_job(pool: Stack) -> None:
    shielded = pool.client.submit("counter", {"steps": 60, "step_seconds": 0.05}, preempt=False)
    wait_running(pool, shielded)
    high = pool.client.submit("counter", {"steps": 2, "step_seconds": 0}, priority=5)
    pool.wait(shielded)
    first = pool.submit("counter", steps=60, step_seconds=0.05)
    pool.wait(high)
    wait_running(pool, first)
    equal = pool.submit("counter", steps=2, step_seconds=0)
    views = {job: pool.wait(job) for job in (shielded, high, first, equal)}
    assert all(view.status == "succeeded" for view in views.values())
    assert views[high].started_at >= views[shielded].finished_at
    assert views[equal].started_at >= views[first].finished_at
    assert not events_of(pool, shielded, "preempted") and not events_of(pool, first, "preempted")
    assert not views[shielded].preemptible and views[first].preemptible


def test_a_time_limit_counts_every_attempt_across_a_sigkill(pool: Stack) -> None:
    limit = 6.0
    job_id = pool.client.submit(
        "counter", {"steps": 400, "step_seconds": 0.05, "checkpoint_every": 5}, time_limit=limit
    )
    running = wait_running(pool, job_id, min_step=40)  # 2 s or more of its 6 s
    os.kill(running.worker_pid, signal.SIGKILL)
    killed_at = datetime.now(UTC)
    view = pool.wait(job_id, timeout=90)
    assert (view.status, view.error_code, view.attempts) == ("failed", "time_limit", 2)
    assert view.time_limit_seconds == limit
    assert view.time_used_seconds >= limit
    first, second = (at(event) for event in events_of(pool, job_id, "started"))
    first_run = (killed_at - first).total_seconds()
    second_run = (view.finished_at - second).total_seconds()
    # The killed attempt counts up to its last write (at most a second before the kill).
    assert second_run <= limit - first_run + 1.5, "the killed attempt's time was counted"
    assert view.step is not None and view.step < 400
    [latest] = [o for o in view.outputs if o.name == "latest.npz"]
    assert latest.step == view.step, "it checkpointed where it stopped"
    status = pool.cli("status", job_id, check=True).stdout
    assert "used of 6s" in status


def test_fair_share_alternates_owners(pool: Stack) -> None:
    blocker = pool.submit("counter", steps=400, step_seconds=0.05)
    wait_running(pool, blocker)
    quick = {"steps": 1, "step_seconds": 0}
    order = ["alice"] * 3 + ["bob"] * 2
    jobs = [pool.client.submit("counter", quick, owner=owner) for owner in order]
    pool.client.cancel(blocker)
    views = [pool.wait(job) for job in jobs]
    started = sorted(views, key=lambda view: view.started_at)
    assert [view.owner for view in started] == ["alice", "bob", "alice", "bob", "alice"]
    listed = pool.cli("list", "--owner", "bob", "--json", check=True).stdout
    assert sorted(v["id"] for v in json.loads(listed)) == sorted(jobs[3:])


def test_an_owner_cap_holds_further_jobs_pending(tmp_path: Path) -> None:
    with running_stack(
        "embedded", tmp_path, workers=2, ATELIER_MAX_RUNNING_PER_OWNER="1"
    ) as capped:
        slow = {"steps": 20, "step_seconds": 0.05}
        alices = [capped.client.submit("counter", slow, owner="alice") for _ in range(2)]
        bob = capped.client.submit("counter", slow, owner="bob")
        views = [capped.wait(job) for job in [*alices, bob]]
    first, second, bobs = views
    assert all(view.status == "succeeded" for view in views)
    assert second.started_at >= first.finished_at, "alice never had two jobs at once"
    assert bobs.started_at < first.finished_at, "bob's job ran beside alice's"


DCGAN = {
    "dataset": "glyphs", "image_size": 28, "batch_size": 8, "latent_dim": 16,
    "dataset_size": 64, "steps_per_epoch": 4, "samples": 4, "checkpoint_every": 3,
    "deterministic": True, "seed": 3,
}  # fmt: skip


def model_sha(view: JobView) -> str:
    [model] = [o for o in view.outputs if (o.role, o.name) == ("model", "generator.keras")]
    return model.sha256


def test_from_continues_exactly_where_the_first_job_ended(embedded_stack: Stack) -> None:
    pool = embedded_stack  # TensorFlow jobs: one backend (the refusals below run on both)
    first = pool.wait(pool.client.submit("dcgan", {**DCGAN, "epochs": 2}), timeout=300)
    assert first.status == "succeeded", first.error_message
    assert {o.step for o in first.outputs if o.name == "latest.npz"} == {8}
    continued = pool.wait(
        pool.client.submit("dcgan", {"epochs": 4}, continues=first.id), timeout=300
    )
    whole = pool.wait(pool.client.submit("dcgan", {**DCGAN, "epochs": 4}), timeout=300)
    assert (continued.status, whole.status) == ("succeeded", "succeeded")
    assert continued.spec == {**first.spec, "epochs": 4}
    assert continued.continues == first.id and continued.resumed_from_step == 8
    [resumed] = events_of(pool, continued.id, "resumed")
    assert resumed == {**resumed, "step": 8, "from": first.id}
    assert model_sha(continued) == model_sha(whole), "the bytes of one uninterrupted run"
    assert model_sha(continued) != model_sha(first)
    epochs = [e["epoch"] for e in events_of(pool, continued.id, "metrics")]
    assert epochs == [3, 4]
    digest = hashlib.sha256(Path(first.outputs[0].location).read_bytes()).hexdigest()
    assert digest == first.outputs[0].sha256, "the source job is left as it was"


def test_from_refuses_what_cannot_continue(pool: Stack) -> None:
    done = pool.wait(pool.submit("counter", steps=3, step_seconds=0))
    running = pool.submit("counter", steps=400, step_seconds=0.05)
    wait_running(pool, running)
    before = len(pool.client.list(limit=1000))
    cases = {
        ("counter", done.id, "steps=9"): "may change only checkpoint_every, epochs, quality, "
        "quality_every, samples; steps would change what its checkpoint holds",
        ("counter", running, "seed=1"): "that job is running",
        ("gan-sample", done.id, "count=2"): "gan-sample jobs keep no checkpoint",
        ("dcgan", done.id, "epochs=9"): "that is a counter job, not dcgan",
    }
    for (kind, source, setting), message in cases.items():
        result = pool.cli("submit", kind, "--from", source, "--set", setting)
        assert result.returncode == 2, result
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert len(pool.client.list(limit=1000)) == before, "nothing stored"
    pool.client.cancel(running)
    pool.wait(running)


def test_a_queue_s_default_time_limit_applies_when_none_is_given(pool: Stack) -> None:
    settings = dataclasses.replace(pool.settings, time_limits={"gpu": 600.0})
    client = Client(settings)
    quick = {"steps": 1, "step_seconds": 0}
    defaulted = client.submit("counter", quick)
    given = client.submit("counter", quick, time_limit=30.0)
    elsewhere = client.submit("counter", quick, queue="cpu")
    limits = [pool.wait(job).time_limit_seconds for job in (defaulted, given)]
    assert limits == [600.0, 30.0]
    assert client.get(elsewhere).time_limit_seconds is None
    client.cancel(elsewhere)
