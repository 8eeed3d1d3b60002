"""Cold against warm job start on one worker: the first job of a kind and shape on a fresh
worker process against the second one, which finds the built models in the process cache.

    python bench/bench_warm_start.py [--repeats 3] [--kinds dcgan]

Each repeat starts a fresh embedded stack (`atelier up --workers 1` in a temporary
ATELIER_HOME) per kind, runs two jobs of the same kind and shape one after the other,
and stops the stack; so every cold job is the first job of a new worker process, and
cold and warm runs alternate. The start time of a job is read from its own events, as
written by the worker: from `started` (written at claim) to the first `progress` event
(the first progress report of a job always becomes an event: the runtime's event throttle
starts at zero). For dcgan that is one training step, plus for the cold job the model
build and the trace of the train step (the worker's pool process imports TensorFlow
before it takes a job, so no job pays for that). The `model_cache`
event each job writes at the end shows whether it built the models or reused them.

A new kind is one more entry in CASES.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.settings import Settings, load_settings  # noqa: E402
from scheduler.client import Client  # noqa: E402

STACK_START_SECONDS = 120.0
JOB_TIMEOUT_SECONDS = 600.0
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Case:
    """One kind at one shape: the first job runs `spec`, the second `spec | warm_changes`
    (a change that must not matter to the cache, e.g. the seed)."""

    kind: str
    spec: dict[str, Any]
    warm_changes: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case(
        "dcgan",
        {"image_size": 28, "batch_size": 8, "epochs": 1, "steps_per_epoch": 5, "samples": 4},
        warm_changes={"seed": 1},
    ),
]


@dataclass(frozen=True)
class JobStart:
    job_id: str
    queued_seconds: float  # submit -> started
    start_seconds: float  # started -> first progress
    cache_hits: int
    cache_builds: int
    pid: int | None


class EmbeddedStack:
    """`atelier up --workers N` in its own temporary ATELIER_HOME, and a client for it."""

    def __init__(self, workers: int = 1, prefix: str = "atelier-bench-") -> None:
        self.home = Path(tempfile.mkdtemp(prefix=prefix))
        self.workers = workers
        self.env = stack_environment(self.home)
        self.settings: Settings = load_settings(self.env)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EmbeddedStack:
        log = open(self.home / "stack.log", "ab")  # kept open for the process' life
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "up", "--workers", str(self.workers)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.home,
            start_new_session=True,
        )  # fmt: skip
        self.client = Client(self.settings)
        self._wait_for_workers()
        return self

    def __exit__(self, error: type[BaseException] | None, *_: object) -> None:
        """Stop the stack; remove its home unless something went wrong (keep the log)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if error is None:
            shutil.rmtree(self.home, ignore_errors=True)
        else:
            print(f"stack log kept: {self.home / 'stack.log'}", file=sys.stderr)

    def _wait_for_workers(self) -> None:
        from core.broker import redis_client
        from core.presence import live_workers

        deadline = time.monotonic() + STACK_START_SECONDS
        while time.monotonic() < deadline:
            try:
                if len(live_workers(redis_client(self.settings))) >= self.workers:
                    return
            except (redis.RedisError, OSError):  # Redis is not up yet
                pass
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"stack did not come up; see {self.home / 'stack.log'}")

    def run_job(self, kind: str, spec: dict[str, Any]) -> str:
        """Submit a job and wait until it succeeded; returns its id."""
        job_id = self.client.submit(kind, spec)
        view = self.client.wait(job_id, timeout=JOB_TIMEOUT_SECONDS, poll=0.1)
        if view.status != "succeeded":
            raise RuntimeError(f"{kind} job {job_id} {view.status}: {view.error_message}")
        return job_id


def stack_environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(
        ATELIER_HOME=str(home),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    return env


def event_times(events: list[dict[str, Any]], type_: str) -> list[datetime]:
    return [datetime.fromisoformat(e["at"]) for e in events if e["type"] == type_]


def job_start(client: Client, job_id: str) -> JobStart:
    events = client.events(job_id)
    submitted = event_times(events, "submitted")[0]
    started = event_times(events, "started")[-1]
    first_progress = next(t for t in event_times(events, "progress") if t >= started)
    cache = next((e for e in events if e["type"] == "model_cache"), {})
    return JobStart(
        job_id=job_id,
        queued_seconds=(started - submitted).total_seconds(),
        start_seconds=(first_progress - started).total_seconds(),
        cache_hits=cache.get("hits", 0),
        cache_builds=cache.get("builds", 0),
        pid=cache.get("pid"),
    )


def cold_and_warm(case: Case) -> tuple[JobStart, JobStart]:
    """Two jobs of `case` on a fresh one-worker stack: the first cold, the second warm."""
    with EmbeddedStack(workers=1) as stack:
        cold = stack.run_job(case.kind, case.spec)
        warm = stack.run_job(case.kind, {**case.spec, **case.warm_changes})
        return job_start(stack.client, cold), job_start(stack.client, warm)


def describe(label: str, start: JobStart) -> str:
    return (
        f"    {label}  {start.start_seconds:7.2f} s   "
        f"(submit->started {start.queued_seconds:5.2f} s; "
        f"cache hits {start.cache_hits} builds {start.cache_builds}, pid {start.pid})"
    )


def report(case: Case, pairs: list[tuple[JobStart, JobStart]]) -> None:
    cold = statistics.median(c.start_seconds for c, _ in pairs)
    warm = statistics.median(w.start_seconds for _, w in pairs)
    ratios = [w.start_seconds / c.start_seconds for c, w in pairs]
    print(f"{case.kind}  {case.spec}  (second job: {case.warm_changes or 'same spec'})")
    for index, (c, w) in enumerate(pairs, 1):
        print(f"  repeat {index}")
        print(describe("cold", c))
        print(describe("warm", w))
    print(f"  started -> first progress, median of {len(pairs)}")
    print(f"    cold (build + trace + 1 step)              {cold:7.2f} s")
    print(f"    warm (cached models + 1 step)              {warm:7.2f} s")
    per_repeat = statistics.median(ratios)
    print(f"    ratio warm/cold  {warm / cold:5.2f}  (per-repeat median {per_repeat:.2f})")
    print(f"    cold/warm        {cold / warm:5.1f}x faster warm start")
    reused = all(w.cache_hits > 0 and w.cache_builds == 0 for _, w in pairs)
    same_pid = all(c.pid == w.pid for c, w in pairs)
    print(f"    warm jobs reused the cache: {reused}; same worker process: {same_pid}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", nargs="*", default=[case.kind for case in CASES])
    args = parser.parse_args()

    cases = [case for case in CASES if case.kind in args.kinds]
    results: dict[str, list[tuple[JobStart, JobStart]]] = {case.kind: [] for case in cases}
    began = time.perf_counter()
    for _ in range(args.repeats):
        for case in cases:
            results[case.kind].append(cold_and_warm(case))
    for case in cases:
        report(case, results[case.kind])
    print(f"({time.perf_counter() - began:.0f} s in all)")


if __name__ == "__main__":
    main()
