"""Process supervision: keep child processes running, restart the ones that exit, and
stop them in order with a grace period. `atelier up` (scheduler/stack.py) and the GPU
worker pool (worker/gpus.py) supervise their processes with it."""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("atelier.supervision")

POLL_SECONDS = 0.2
QUICK_EXIT_SECONDS = 10.0
"""A child that exits this soon after starting is restarted only after a delay..."""
RESTART_DELAY_SECONDS = 5.0
"""...of this long, so a child that cannot start does not spin."""


@dataclass
class Child:
    """A process kept running: started again whenever it exits."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    restart_delay: float = RESTART_DELAY_SECONDS
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float = 0.0

    def keep_alive(self, now: float) -> None:
        if self.process is not None and self.process.poll() is not None:
            log.warning("%s exited (%s); starting it again", self.name, self.process.returncode)
            quick = now - self.started < QUICK_EXIT_SECONDS
            self.restart_at = now + (self.restart_delay if quick else 0.0)
            self.process = None
        if self.process is None and now >= self.restart_at:
            self.process = self.start()
            self.started = now
            log.info("started %s (pid %d)", self.name, self.process.pid)

    @property
    def running(self) -> subprocess.Popen[bytes] | None:
        if self.process is not None and self.process.poll() is None:
            return self.process
        return None


def keep_running(
    children: Sequence[Child],
    stopping: Callable[[], bool],
    tick: Callable[[], None] | None = None,
) -> None:
    """Keep every child running until `stopping()`; `tick` runs on every round."""
    while not stopping():
        now = time.monotonic()
        for child in children:
            child.keep_alive(now)
        if tick is not None:
            tick()
        time.sleep(POLL_SECONDS)


def stop(
    children: Sequence[Child],
    grace: float | None,
    *,
    kill_now: Callable[[], bool] = lambda: False,
    tick: Callable[[], None] | None = None,
) -> None:
    """SIGTERM the running children (a warm shutdown) and wait for them; kill those still
    running after `grace` seconds (None: wait for as long as it takes) or once
    `kill_now()` says so. `tick` runs while waiting."""
    processes = [p for p in (child.running for child in children) if p is not None]
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = None if grace is None else time.monotonic() + grace
    while any(process.poll() is None for process in processes):
        late = deadline is not None and time.monotonic() >= deadline
        if late or kill_now():
            for process in processes:
                if process.poll() is None:
                    log.warning("process %d did not stop in time; killing it", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            deadline = None
        if tick is not None:
            tick()
        time.sleep(POLL_SECONDS / 2)
    for process in processes:
        process.wait()
