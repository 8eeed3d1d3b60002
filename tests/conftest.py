"""Real stacks for end-to-end tests: `atelier up` with real Celery worker processes.

`embedded`: SQLite file + the embedded Redis, exactly what a new user runs.
`services`: the machine's PostgreSQL (a fresh database per session) and Redis (db 15).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from core.settings import Settings, load_settings
from scheduler.client import Client, JobView

REPO = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get("ATELIER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
# One Redis database per pytest-xdist worker (gw0 -> 15, gw1 -> 14, ...): each flushes its own.
_XDIST_INDEX = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_TEST_URL = os.environ.get("ATELIER_TEST_REDIS", f"redis://127.0.0.1:6379/{15 - _XDIST_INDEX}")
LEASE_SECONDS = 3
TEST_KINDS = "counter=tests.fixtures.kinds"
os.environ["ATELIER_EXTRA_KINDS"] = TEST_KINDS  # the client in this process validates them too


# Test modules that share session fixtures (trained models) run in one xdist process.
SHARED_FIXTURE_GROUPS = {
    "test_sampling": "trained-images",
    "test_vae": "trained-images",
    "test_cgan": "trained-images",
    "test_denoising_ae": "trained-images",
    "test_text_lm": "trained-text",
    "test_text_generate": "trained-text",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With pytest-xdist's `--dist loadgroup` (pyproject.toml), each group runs in one
    process: a test module, or the modules of a shared group, so their module and
    session fixtures are built once."""
    for item in items:
        module = item.nodeid.partition("::")[0].rpartition("/")[2].removesuffix(".py")
        item.add_marker(pytest.mark.xdist_group(SHARED_FIXTURE_GROUPS.get(module, module)))


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(
        ATELIER_HOME=str(home),
        ATELIER_EXTRA_KINDS=TEST_KINDS,
        ATELIER_LEASE_SECONDS=str(LEASE_SECONDS),
        ATELIER_RETRY_BACKOFF_SECONDS="0.5",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    return env


class Stack:
    """A running `atelier up` and a client talking to the same database."""

    def __init__(self, name: str, home: Path, env: dict[str, str], workers: int) -> None:
        self.name = name
        self.home = home
        self.env = env
        self.workers = workers
        self.settings: Settings = load_settings(env)
        self.log_path = home / "stack.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process' life
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "up", "--workers", str(self.workers)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.home,
        )
        self.client = Client(self.settings)
        self.wait_for(self.workers_ready, timeout=60, what="workers to announce themselves")

    def workers_ready(self) -> bool:
        from core.broker import redis_client
        from core.presence import live_workers

        try:
            return len(live_workers(redis_client(self.settings))) >= self.workers
        except (redis.RedisError, OSError):
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            cwd=self.home,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"atelier {' '.join(args)} failed: {result.stderr}")
        return result

    def submit(self, kind: str, **spec: Any) -> str:
        return self.client.submit(kind, spec)

    def wait(self, job_id: str, timeout: float = 120) -> JobView:
        try:
            return self.client.wait(job_id, timeout=timeout, poll=0.1)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n--- stack log ---\n{self.log_tail()}") from None

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n--- stack log ---\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def postgres_database() -> tuple[str, Callable[[], None]]:
    name = f"atelier_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES_ADMIN_URL}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(f"{POSTGRES_ADMIN_URL}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    url = POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{url}/{name}", drop


def make_stack(name: str, home: Path, workers: int = 2) -> tuple[Stack, Callable[[], None]]:
    home.mkdir(parents=True, exist_ok=True)
    env = base_env(home)
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if name == "services":
        env["ATELIER_DATABASE_URL"], cleanup = postgres_database()
        env["ATELIER_BROKER_URL"] = REDIS_TEST_URL
        redis.Redis.from_url(REDIS_TEST_URL).flushdb()
        subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "db", "upgrade"],
            env=env, check=True, capture_output=True, cwd=home,
        )  # fmt: skip
    return Stack(name, home, env, workers), cleanup


@pytest.fixture(scope="session", params=["embedded", "services"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A running two-worker stack per backend, shared by the tests of a session."""
    running, cleanup = make_stack(request.param, tmp_path_factory.mktemp(request.param))
    running.start()
    yield running
    running.stop()
    cleanup()


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running, cleanup = make_stack("embedded", tmp_path_factory.mktemp("embedded-dcgan"))
    running.start()
    yield running
    running.stop()
    cleanup()
