"""`atelier up` keeps its processes running: a killed scheduler or embedded Redis comes
back, and jobs accepted before and after still reach a final status."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.broker import redis_client
from tests.fixtures.jobs import running_stack
from tests.fixtures.stacks import Stack


@pytest.fixture(scope="module")
def lone_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack("embedded", tmp_path_factory.mktemp("supervised"), workers=1) as running:
        yield running


def child_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children]


def command_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_killed_scheduler_is_restarted(lone_stack: Stack) -> None:
    assert lone_stack.process is not None
    [scheduler] = [
        p for p in child_pids(lone_stack.process.pid) if "cli scheduler" in command_of(p)
    ]
    os.kill(scheduler, signal.SIGKILL)
    view = lone_stack.wait(lone_stack.submit("counter", steps=3, step_seconds=0), timeout=60)
    assert view.status == "succeeded"
    [restarted] = [
        p for p in child_pids(lone_stack.process.pid) if "cli scheduler" in command_of(p)
    ]
    assert restarted != scheduler


def test_killed_embedded_redis_is_restarted_and_no_job_is_lost(lone_stack: Stack) -> None:
    running = lone_stack.submit("counter", steps=40, step_seconds=0.05)
    lone_stack.wait_for(
        lambda: lone_stack.client.get(running).status == "running", 60, "the job to start"
    )
    old_pid = redis_client(lone_stack.settings).info()["process_id"]
    os.kill(old_pid, signal.SIGKILL)
    waiting = lone_stack.submit("counter", steps=2, step_seconds=0)

    def redis_back() -> bool:
        try:
            return redis_client(lone_stack.settings, timeout=1).info()["process_id"] != old_pid
        except (redis.RedisError, OSError):
            return False

    lone_stack.wait_for(redis_back, 30, "the embedded Redis to be restarted")
    assert lone_stack.wait(running, timeout=120).status == "succeeded"
    assert lone_stack.wait(waiting, timeout=120).status == "succeeded"
