"""Notifications (`--notify URL`): a signed POST per URL when a job ends, on real stacks
(both backends) with a real HTTP receiver in this process; and the notifier's claims
and restarts with two notifiers on one database and Redis."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from core.broker import redis_client
from core.settings import Settings, load_settings
from db import jobs
from db.engine import reader_factory, session_factory
from db.migrate import upgrade
from db.models import Event, EventType, Job, JobStatus, utcnow
from scheduler.notifier import NO_SECRET, Notifier
from scheduler.webhooks import SIGNATURE_HEADER, encode, verify
from tests.fixtures.jobs import events_of, running_stack
from tests.fixtures.stacks import Stack, redis_test_url

SECRET = "a webhook secret for the tests"
RETRY_SECONDS = "4"
"""Failed notices are retried this long: tries at 0, 1 and 3 s, then given up."""


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request. Paths starting with
    /fail answer 500; /hang holds its first request until `release`, then answers 500
    (later ones at once); anything else answers 204."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.hanging = threading.Event()
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(Received(self.path, dict(self.headers), body))
                code = 204
                if self.path.startswith("/hang") and not receiver.hanging.is_set():
                    receiver.hanging.set()
                    receiver.released.wait(120)
                    code = 500
                elif self.path.startswith(("/fail", "/hang")):
                    code = 500
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def to(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


def dead_url() -> str:
    """A URL of a port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone"


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.released.set()
    running.server.shutdown()


@pytest.fixture(scope="module", autouse=True)
def secret_here() -> Iterator[None]:
    """This process' client checks --notify against its own environment's secret."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ATELIER_WEBHOOK_SECRET", SECRET)
        yield


REDIS_SLOT = 3  # beside the session's services stack (tests/fixtures/stacks.py)


@pytest.fixture(scope="module", params=["embedded", "services"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp(f"webhooks-{request.param}")
    env = {
        "ATELIER_WEBHOOK_SECRET": SECRET,
        "ATELIER_WEBHOOK_RETRY_SECONDS": RETRY_SECONDS,
        "ATELIER_WEBHOOK_TIMEOUT_SECONDS": "60",  # the hanging receiver lets go first
    }
    with running_stack(request.param, home, workers=2, redis_slot=REDIS_SLOT, **env) as running:
        yield running


def notified(stack: Stack, job_id: str, urls: int, timeout: float = 60) -> list[dict[str, Any]]:
    """The job's `notified` events, once there is one per URL and notified_at is set."""
    readers = reader_factory(stack.settings.database_url)

    def done() -> bool:
        with readers() as session:
            job = session.get(Job, job_id)
            assert job is not None
            at = job.notified_at
        return at is not None and len(events_of(stack, job_id, "notified")) == urls

    stack.wait_for(done, timeout=timeout, what=f"job {job_id}'s notices")
    return events_of(stack, job_id, "notified")


def test_an_ended_job_is_notified_once_per_url_signed(stack: Stack, receiver: Receiver) -> None:
    paths = [unique("/ok"), unique("/ok")]
    job_id = stack.client.submit(
        "counter", {"steps": 6, "step_seconds": 0}, notify=[receiver.url(p) for p in paths]
    )
    view = stack.wait(job_id)
    assert view.status == "succeeded", view.error_message
    events = notified(stack, job_id, urls=2)
    assert sorted(e["url"] for e in events) == sorted(receiver.url(p) for p in paths)
    for event in events:
        assert (event["delivered"], event["attempts"], event["status_code"]) == (True, 1, 204)
    for path in paths:
        [got] = receiver.to(path)  # exactly one POST per URL
        assert verify(got.body, got.headers[SIGNATURE_HEADER], SECRET)
        assert not verify(got.body, got.headers[SIGNATURE_HEADER], "another secret")
        assert got.headers["Content-Type"] == "application/json"
        assert got.headers["X-Atelier-Delivery"] == job_id
        assert got.headers["X-Atelier-Event"] == "job.finished"
        body = json.loads(got.body)
        assert encode(body) == got.body  # compact, sorted: what was signed is what was sent
        assert (body["id"], body["kind"], body["status"]) == (job_id, "counter", "succeeded")
        assert (body["error_code"], body["error_message"]) == (None, None)
        assert body["finished_at"] == view.finished_at.isoformat()  # type: ignore[union-attr]
        expected = {
            (o.role, o.name): {"location": o.location, "sha256": o.sha256, "bytes": o.bytes}
            for o in view.outputs
        }
        assert {
            (o["role"], o["name"]): {k: o[k] for k in ("location", "sha256", "bytes")}
            for o in body["outputs"]
        } == expected
        [summary] = [o for o in body["outputs"] if o["role"] == "result"]
        data = Path(summary["location"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == summary["sha256"]
        assert json.loads(data)["total"] == 21.0


def test_a_failed_job_notifies_its_error(stack: Stack, receiver: Receiver) -> None:
    path = unique("/ok")
    job_id = stack.client.submit(
        "counter", {"steps": 6, "step_seconds": 0, "nan_at_step": 2}, notify=[receiver.url(path)]
    )
    assert stack.wait(job_id).status == "failed"
    [event] = notified(stack, job_id, urls=1)
    assert event["delivered"] is True
    [got] = receiver.to(path)
    body = json.loads(got.body)
    assert (body["status"], body["error_code"]) == ("failed", "nan_loss")
    assert body["error_message"] == "loss became NaN at step 2"
    assert verify(got.body, got.headers[SIGNATURE_HEADER], SECRET)


def test_failing_hanging_and_dead_receivers_change_nothing(
    stack: Stack, receiver: Receiver
) -> None:
    """The job ends as it would have; while the notifier waits on a receiver that
    hangs, other jobs are scheduled and run; each URL's failure is recorded after its
    bounded retries."""
    receiver.hanging.clear()
    receiver.released.clear()
    fail_path = unique("/fail")
    fail, hang, dead = receiver.url(fail_path), receiver.url(unique("/hang")), dead_url()
    job_id = stack.client.submit(
        "counter", {"steps": 4, "step_seconds": 0}, notify=[fail, hang, dead]
    )
    view = stack.wait(job_id)
    assert (view.status, view.error_code, view.attempts) == ("succeeded", None, 1)
    assert receiver.hanging.wait(60), stack.log_tail()
    try:
        # The notifier is inside a POST that will not return before we let it: the
        # scheduler still starts and finishes the next job.
        other = stack.wait(stack.submit("counter", steps=3, step_seconds=0))
        assert other.status == "succeeded"
        assert len(events_of(stack, job_id, "notified")) < 3  # the hanging one is not done
    finally:
        receiver.released.set()
    events = {e["url"]: e for e in notified(stack, job_id, urls=3)}
    assert not any(e["delivered"] for e in events.values())
    assert events[fail]["status_code"] == 500 and events[fail]["error"] == "HTTP 500"
    assert events[hang]["status_code"] == 500
    assert events[dead]["status_code"] is None and "refused" in events[dead]["error"].lower()
    # Retried with pauses (1 s, then 2 s) within the bound; each try was one POST.
    assert events[fail]["attempts"] >= 2 and events[dead]["attempts"] >= 2
    assert len(receiver.to(fail_path)) == events[fail]["attempts"]
    assert stack.client.get(job_id).status == "succeeded"


def test_notify_is_refused_at_submit_without_a_secret_or_with_a_bad_url(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if k != "ATELIER_WEBHOOK_SECRET"}
    before = len(stack.client.list(limit=1000))
    for args, expected in (
        (["--notify", "http://127.0.0.1:9/x"], "--notify needs ATELIER_WEBHOOK_SECRET set"),
        (["--notify", "ftp://example.com/x"], "--notify takes an http:// or https:// URL"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "submit", "counter", *args],
            env=env, capture_output=True, text=True, cwd=stack.home, timeout=120,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert len(stack.client.list(limit=1000)) == before


# --- the notifier itself, on a database and Redis of its own ---------------------------


def notifier_settings(home: Path, **env: str) -> Settings:
    settings = load_settings(
        {
            "ATELIER_HOME": str(home),
            "ATELIER_BROKER_URL": redis_test_url(REDIS_SLOT),
            "ATELIER_WEBHOOK_RETRY_SECONDS": "2",
            **env,
        }
    )
    upgrade(settings.database_url)
    return settings


def ended_jobs(settings: Settings, notify: list[str], count: int = 1) -> list[str]:
    """Jobs that succeeded just now, with these URLs to notify."""
    sessions = session_factory(settings.database_url)
    ids = []
    with sessions.begin() as session:
        for _ in range(count):
            sharing = jobs.Sharing(notify=tuple(notify))
            job = jobs.create_job(session, kind="counter", spec={}, queue="gpu", sharing=sharing)
            now = utcnow()
            session.execute(
                update(Job)
                .where(Job.id == job.id)
                .values(
                    status=JobStatus.SUCCEEDED,
                    started_at=now - timedelta(seconds=3),
                    finished_at=now,
                )
            )
            ids.append(job.id)
    return ids


@contextlib.contextmanager
def notifiers_running(settings: Settings, count: int) -> Iterator[None]:
    stop = threading.Event()
    threads = [Notifier(settings, redis_client(settings)).start(stop) for _ in range(count)]
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def wait_all_notified(settings: Settings, ids: list[str], timeout: float = 30) -> None:
    readers = reader_factory(settings.database_url)
    deadline = utcnow() + timedelta(seconds=timeout)
    while utcnow() < deadline:
        with readers() as session:
            left = session.scalar(
                select(Job.id).where(Job.id.in_(ids), Job.notified_at.is_(None)).limit(1)
            )
        if left is None:
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"jobs still not notified: {left}")


def notified_events(settings: Settings, job_id: str) -> list[dict[str, Any]]:
    with reader_factory(settings.database_url)() as session:
        return list(
            session.scalars(
                select(Event.payload)
                .where(Event.job_id == job_id, Event.type == EventType.NOTIFIED)
                .order_by(Event.id)
            ).all()
        )


def test_two_notifiers_send_each_url_once(tmp_path: Path, receiver: Receiver) -> None:
    settings = notifier_settings(tmp_path, ATELIER_WEBHOOK_SECRET=SECRET)
    path = unique("/ok")
    ids = ended_jobs(settings, [receiver.url(path)], count=8)
    with notifiers_running(settings, 2):
        wait_all_notified(settings, ids)
    deliveries = sorted(r.headers["X-Atelier-Delivery"] for r in receiver.to(path))
    assert deliveries == sorted(ids)  # each job's notice once, whichever notifier sent it
    for job_id in ids:
        [event] = notified_events(settings, job_id)
        assert event["delivered"] is True


def test_a_restarted_notifier_sends_only_what_is_not_recorded(
    tmp_path: Path, receiver: Receiver
) -> None:
    """A notifier that died after recording one URL's outcome: the next one sends the
    other URL only, then sets notified_at."""
    settings = notifier_settings(tmp_path, ATELIER_WEBHOOK_SECRET=SECRET)
    first, second = unique("/ok"), unique("/ok")
    [job_id] = ended_jobs(settings, [receiver.url(first), receiver.url(second)])
    recorded = {"url": receiver.url(first), "delivered": True, "attempts": 1}
    with session_factory(settings.database_url).begin() as session:
        jobs.add_event(session, job_id, EventType.NOTIFIED, recorded)
    with notifiers_running(settings, 1):
        wait_all_notified(settings, [job_id])
    assert receiver.to(first) == [] and len(receiver.to(second)) == 1
    assert [e["url"] for e in notified_events(settings, job_id)] == [
        receiver.url(first), receiver.url(second)
    ]  # fmt: skip


def test_without_a_secret_the_notifier_records_why_nothing_was_sent(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings = notifier_settings(tmp_path)
    assert settings.webhook_secret is None
    path = unique("/ok")
    [job_id] = ended_jobs(settings, [receiver.url(path)])
    with notifiers_running(settings, 1):
        wait_all_notified(settings, [job_id])
    [event] = notified_events(settings, job_id)
    assert (event["delivered"], event["attempts"], event["error"]) == (False, 0, NO_SECRET)
    assert receiver.to(path) == []
