"""`atelier flower` for real against an embedded stack: authentication, workers, tasks,
live job progress and Prometheus metrics, read through Flower's HTTP API."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.jobs import running_stack
from tests.fixtures.stacks import Stack

CREDENTIALS = "atelier-admin:s3cret-Flower-pw"
HOST = socket.gethostname()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Flower:
    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.port = port
        self.process = process
        self.log = log

    def get(
        self, path: str, credentials: str | None = CREDENTIALS, method: str = "GET"
    ) -> tuple[int, bytes]:
        data = b"" if method == "POST" else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method
        )
        if credentials is not None:
            token = base64.b64encode(credentials.encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def flower_env(stack: Stack, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in stack.env.items() if not k.startswith("FLOWER_")}
    env.update(extra)
    return env


def start_flower(stack: Stack, env: dict[str, str], *args: str, name: str = "flower") -> Flower:
    port = free_port()
    log = stack.home / f"{name}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "flower", "--port", str(port), *args],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=stack.home,
        )
    flower = Flower(port, process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"flower exited:\n{log.read_text()}"
        try:
            if flower.get("/healthcheck", credentials=None)[0] == 200:
                return flower
        except OSError:
            pass
        time.sleep(0.1)
    flower.stop()
    raise AssertionError(f"flower did not answer in 30 s:\n{log.read_text()}")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack("embedded", tmp_path_factory.mktemp("flower"), workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def flower(stack: Stack) -> Iterator[Flower]:
    running = start_flower(stack, flower_env(stack, FLOWER_BASIC_AUTH=CREDENTIALS))
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("extra_env", "args", "message"),
    [
        ({}, [], "FLOWER_BASIC_AUTH"),
        ({"FLOWER_BASIC_AUTH": "admin"}, [], "user:password"),
        ({"FLOWER_BASIC_AUTH": "admin:"}, [], "user:password"),
        ({}, ["--local-only", "--address", "0.0.0.0"], "--local-only"),
    ],
)
def test_flower_refuses_to_start_without_usable_credentials(
    stack: Stack, extra_env: dict[str, str], args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "flower", "--port", str(free_port()), *args],
        env=flower_env(stack, **extra_env),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=stack.home,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("atelier: error: ") and message in line


def test_ui_and_api_answer_401_without_credentials(flower: Flower) -> None:
    for path in ("/", "/workers", "/tasks", "/api/workers", "/api/tasks", "/api/task/info/x"):
        for credentials in (None, "atelier-admin:wrong", "nobody:" + CREDENTIALS.split(":")[1]):
            status, _ = flower.get(path, credentials=credentials)
            assert status == 401, (path, credentials, status)
    assert flower.get("/", credentials=CREDENTIALS)[0] == 200
    assert flower.get("/tasks", credentials=CREDENTIALS)[0] == 200
    # Read-only: jobs are controlled through Atelier, not by revoking Celery tasks.
    shutdown = f"/api/worker/shutdown/w0@{HOST}"
    assert flower.get(shutdown, credentials=None, method="POST")[0] == 401
    assert flower.get(shutdown, method="POST")[0] == 403


def test_api_lists_the_running_worker(flower: Flower) -> None:
    workers = flower.json("/api/workers?refresh=1")
    assert list(workers) == [f"w0@{HOST}"]
    queues = {q["name"] for q in workers[f"w0@{HOST}"]["active_queues"]}
    assert queues == {"gpu", "cpu"}
    assert workers[f"w0@{HOST}"]["stats"]["pool"]["max-concurrency"] == 1


def test_job_progress_is_live_and_the_finished_task_is_listed(stack: Stack, flower: Flower) -> None:
    job_id = stack.submit("counter", steps=30, step_seconds=0.1)

    def task_of_job() -> tuple[str, dict[str, Any]] | None:
        for uuid, task in flower.json("/api/tasks").items():
            if task["args"] == repr([job_id]):
                return uuid, task
        return None

    # While the job runs, Flower shows its latest progress report.
    seen: list[dict[str, Any]] = []

    def progress_while_running() -> bool:
        found = task_of_job()
        if found is None or stack.client.get(job_id).status != "running":
            return False
        if found[1]["state"] == "PROGRESS":
            seen.append(found[1]["result"])
        return len({r["step"] for r in seen}) >= 2

    wait_until(progress_while_running, timeout=30, what="two progress reports in Flower")
    report = seen[-1]
    assert report["job_id"] == job_id
    assert 0 < report["step"] < 30 and report["total_steps"] == 30
    assert report["progress"] == pytest.approx(report["step"] / 30)
    assert report["metrics"] == {"total": report["step"] * (report["step"] + 1) / 2}
    assert "epoch" in report

    assert stack.wait(job_id, timeout=60).status == "succeeded"
    uuid, task = wait_until(
        lambda: (found := task_of_job()) and found[1]["state"] == "SUCCESS" and found,
        timeout=15,
        what="the finished task in Flower",
    )
    assert task["name"] == "atelier.counter"
    assert task["args"] == repr([job_id])
    assert task["worker"] == f"w0@{HOST}"
    assert task["result"] == repr("succeeded")
    assert flower.json(f"/api/task/info/{uuid}")["name"] == "atelier.counter"

    # Prometheus metrics count the task's events, progress included.
    status, body = flower.get("/metrics", credentials=None)
    assert status == 200
    metrics = body.decode()
    worker = f'worker="w0@{HOST}"'
    for event in ("task-progress", "task-succeeded"):
        assert f'events_total{{task="atelier.counter",type="{event}",{worker}}}' in metrics
    assert f"flower_worker_online{{{worker}}} 1.0" in metrics


def test_local_only_flower_needs_no_credentials_and_listens_on_loopback(stack: Stack) -> None:
    local = start_flower(stack, flower_env(stack), "--local-only", name="flower-local")
    try:
        assert local.get("/api/workers", credentials=None)[0] == 200
        assert local.get("/", credentials=None)[0] == 200
        listening = Path("/proc/net/tcp").read_text()
        assert f"0100007F:{local.port:04X}" in listening  # 127.0.0.1, not 0.0.0.0
        assert f"00000000:{local.port:04X}" not in listening
    finally:
        local.stop()
