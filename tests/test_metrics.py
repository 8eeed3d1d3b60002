"""Queue metrics (`atelier metrics`, `atelier scheduler --metrics-port`): scraped over
HTTP from real processes next to a real stack on each backend, parsed with
prometheus_client's parser, and held against the database and the live workers."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from core.broker import redis_client
from core.presence import live_workers
from db.engine import session_factory
from db.models import Job, utcnow
from tests.fixtures.jobs import running_stack, wait_running
from tests.fixtures.stacks import Stack

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serving(stack: Stack, *args: str) -> Iterator[str]:
    """`atelier <args> ... --port P` (or --metrics-port) running; yields its /metrics URL."""
    port = free_port()
    command = [sys.executable, "-m", "scheduler.cli", *args]
    if args[0] == "metrics":
        command += ["--port", str(port), "--address", "127.0.0.1"]
    else:
        command += ["--metrics-port", str(port), "--metrics-address", "127.0.0.1"]
    log = open(stack.home / f"{args[0]}.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, env=stack.env, cwd=stack.home, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        stack.wait_for(lambda: _answers(url), timeout=30, what=f"{url} to answer")
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` that has these labels."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


REDIS_SLOT = 4  # beside the session's services stack (tests/fixtures/stacks.py)


@pytest.fixture(scope="module", params=["embedded", "services"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp(f"metrics-{request.param}")
    with running_stack(request.param, home, workers=2, redis_slot=REDIS_SLOT) as running:
        yield running


@pytest.fixture(scope="module")
def metrics_url(stack: Stack) -> Iterator[str]:
    with serving(stack, "metrics") as url:
        yield url


def test_the_queue_is_the_database_s_not_redis(stack: Stack, metrics_url: str) -> None:
    """Both workers busy: pending jobs, a job waiting for another, one in a retry delay
    and a paused one, as the database holds them; slots as the live workers have them."""
    idle = scrape(metrics_url)
    workers = live_workers(redis_client(stack.settings))
    slots = sum(w.concurrency for w in workers if "gpu" in w.queues)
    assert slots == 2
    for queue in ("gpu", "cpu"):
        assert value(idle, "atelier_worker_slots", queue=queue, state="busy") == 0
        assert value(idle, "atelier_worker_slots", queue=queue, state="free") == slots
        assert value(idle, "atelier_workers", queue=queue) == len(workers)
        assert value(idle, "atelier_pending_jobs", queue=queue) == 0

    client = stack.client
    long = [stack.submit("counter", steps=4000, step_seconds=0.05) for _ in range(2)]
    for job_id in long:
        wait_running(stack, job_id)
    ready = [stack.submit("counter", steps=2, step_seconds=0) for _ in range(3)]
    waiting = client.submit("counter", {"steps": 2, "step_seconds": 0}, after=long[0])
    delayed = stack.submit("counter", steps=2, step_seconds=0)
    paused = stack.submit("counter", steps=2, step_seconds=0)
    cpu = client.submit("counter", {"steps": 2, "step_seconds": 0}, queue="cpu")
    with session_factory(stack.settings.database_url).begin() as session:
        later = utcnow() + timedelta(hours=1)  # as a retry delay leaves it
        session.execute(update(Job).where(Job.id == delayed).values(run_after=later))
    assert client.pause(paused) == "paused"

    samples = scrape(metrics_url)
    by_status = Counter((v.status, v.queue) for v in client.list(limit=1000))
    for (status, queue), count in by_status.items():
        assert total(samples, "atelier_jobs", status=status, queue=queue) == count
    assert total(samples, "atelier_jobs") == sum(by_status.values())
    assert by_status["pending", "gpu"] == len(ready) + 2  # + the waiting and delayed ones
    assert value(samples, "atelier_pending_jobs", queue="gpu") == len(ready)
    assert value(samples, "atelier_pending_jobs", queue="cpu") == 1
    assert value(samples, "atelier_jobs", status="paused", queue="gpu", kind="counter") == 1
    assert value(samples, "atelier_worker_slots", queue="gpu", state="busy") == 2
    assert value(samples, "atelier_worker_slots", queue="cpu", state="busy") == 0
    for queue in ("gpu", "cpu"):  # the gpu jobs hold every slot the cpu queue has too
        assert value(samples, "atelier_worker_slots", queue=queue, state="free") == 0
    if stack.name == "embedded":  # the scheduler's own endpoint reports the same
        with serving(stack, "scheduler") as url:
            again = scrape(url)
        for queue in ("gpu", "cpu"):
            assert value(again, "atelier_pending_jobs", queue=queue) == value(
                samples, "atelier_pending_jobs", queue=queue
            )

    for job_id in [*long, delayed, paused]:
        client.cancel(job_id)
    for job_id in [*long, *ready, waiting, delayed, paused, cpu]:
        stack.wait(job_id)
    after = scrape(metrics_url)
    assert value(after, "atelier_pending_jobs", queue="gpu") == 0
    assert value(after, "atelier_worker_slots", queue="gpu", state="busy") == 0
    assert value(after, "atelier_worker_slots", queue="gpu", state="free") == slots


def test_run_times_and_failures(stack: Stack, metrics_url: str) -> None:
    for _ in range(2):
        stack.wait(stack.submit("counter", steps=6, step_seconds=0, nan_at_step=2))
    stack.wait(stack.submit("counter", steps=3, step_seconds=0.1))
    samples = scrape(metrics_url)
    views = stack.client.list(limit=1000)
    failed = Counter(v.error_code or "unknown" for v in views if v.status == "failed")
    assert failed["nan_loss"] == 2
    for code, count in failed.items():
        assert value(samples, "atelier_job_failures_total", error_code=code) == count
    ran = [v for v in views if v.final and v.started_at is not None and v.finished_at]
    seconds = {v.id: v.time_used_seconds for v in ran}  # over all attempts, as recorded
    assert total(samples, "atelier_job_run_seconds_count") == len(ran)
    run_sum = total(samples, "atelier_job_run_seconds_sum")
    assert run_sum == pytest.approx(sum(seconds.values()), rel=1e-9)
    assert any(s > 1 for s in seconds.values()) and any(s <= 1 for s in seconds.values())
    for status in ("succeeded", "failed", "cancelled"):
        mine = [seconds[v.id] for v in ran if v.status == status]
        assert total(samples, "atelier_job_run_seconds_count", status=status) == len(mine)
        for le in ("1.0", "10.0", "+Inf"):
            within = sum(1 for s in mine if s <= float(le))
            assert total(samples, "atelier_job_run_seconds_bucket", status=status, le=le) == within
