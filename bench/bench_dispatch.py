"""Dispatch overhead: a no-op job through Atelier against a bare Celery task on the same
embedded Redis, both with one prefork worker process and the same Celery settings.

    python bench/bench_dispatch.py [--repeats 3] [--latency-jobs 100]
                                   [--throughput-jobs 300] [--quick] [--json FILE]

One `atelier up --workers 1` stack (the no-op kind of bench/kinds.py registered) and,
beside it, a bare Celery worker (`bench.kinds:bare_app`, queue `bare`). Every repeat
runs both arms, the order reversed every repeat, each arm: submit→start latency of
`--latency-jobs` jobs one at a time (Atelier: the job's created_at to its started_at in
the database; bare: the send time to the task's start), then throughput of
`--throughput-jobs` jobs submitted at once (until all are done). Latency p50/p99 over the
jobs of all repeats; throughput as medians and the paired ratio atelier/bare.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import harness

from bench.kinds import BARE_STARTS_KEY
from core.broker import redis_client
from core.celery_app import make_app
from scheduler.client import Client
from tests.fixtures.stacks import Stack

POLL_SECONDS = 0.02


@dataclass(frozen=True)
class Dispatch:
    latencies: list[float]  # seconds, one per job
    rate: float  # jobs/s

    def __str__(self) -> str:
        p50 = harness.median(self.latencies) * 1000
        return f"latency p50 {p50:.1f} ms, throughput {self.rate:.1f} jobs/s"


def atelier_latency(client: Client, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        view = client.wait(client.submit("noop", {}), timeout=60, poll=0.002)
        assert view.started_at is not None
        latencies.append((view.started_at - view.created_at).total_seconds())
    return latencies


def atelier_throughput(client: Client, count: int) -> float:
    before = client.count("succeeded")
    began = time.perf_counter()
    for _ in range(count):
        client.submit("noop", {})
    while client.count("succeeded") < before + count:
        time.sleep(POLL_SECONDS)
    return count / (time.perf_counter() - began)


def bare_latency(app: Any, redis: Any, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        app.send_task("bench.bare_noop", args=[time.time()], queue="bare")
        _, stamp = redis.blpop([BARE_STARTS_KEY], timeout=60)
        sent, started = map(float, stamp.split())
        latencies.append(started - sent)
    return latencies


def bare_throughput(app: Any, redis: Any, count: int) -> float:
    redis.delete(BARE_STARTS_KEY)
    began = time.perf_counter()
    for _ in range(count):
        app.send_task("bench.bare_noop", args=[time.time()], queue="bare")
    while redis.llen(BARE_STARTS_KEY) < count:
        time.sleep(POLL_SECONDS)
    return count / (time.perf_counter() - began)


def bare_worker(stack: Stack) -> subprocess.Popen[bytes]:
    log = stack.log_path.open("ab")
    command = [sys.executable, "-m", "celery", "-A", "bench.kinds:bare_app", "worker", "-Q",
               "bare", "-c", "1", "-P", "prefork", "--without-gossip", "--without-mingle",
               "-l", "WARNING"]  # fmt: skip
    return subprocess.Popen(command, env=stack.env, stdout=log, stderr=subprocess.STDOUT)


def measure(stack: Stack, args: Any) -> dict[str, list[Dispatch]]:
    client = stack.client
    app = make_app(stack.settings)
    redis = redis_client(stack.settings, timeout=70)

    def atelier() -> Dispatch:
        latencies = atelier_latency(client, args.latency_jobs)
        return Dispatch(latencies, atelier_throughput(client, args.throughput_jobs))

    def bare() -> Dispatch:
        latencies = bare_latency(app, redis, args.latency_jobs)
        return Dispatch(latencies, bare_throughput(app, redis, args.throughput_jobs))

    warmup = {
        "atelier": lambda: atelier_latency(client, 3),
        "bare": lambda: bare_latency(app, redis, 3),
    }
    return harness.interleave({"atelier": atelier, "bare": bare}, args.repeats, warmup=warmup)


def main() -> None:
    parser = harness.parser(__doc__, repeats=3)
    parser.add_argument("--latency-jobs", type=int, default=100, help="per arm and repeat")
    parser.add_argument("--throughput-jobs", type=int, default=300, help="per arm and repeat")
    args = harness.parse(parser, quick={"repeats": 1, "latency_jobs": 5, "throughput_jobs": 20})
    report = harness.Report("dispatch", args)
    with harness.stack(workers=1, kinds="noop=bench.kinds") as stack:
        bare = bare_worker(stack)
        try:
            results = measure(stack, args)
        finally:
            bare.terminate()
            bare.wait(timeout=60)

    latencies = {arm: [s * 1000 for r in rs for s in r.latencies] for arm, rs in results.items()}
    jobs = f"{args.latency_jobs} jobs one at a time per repeat"
    for percent in (50, 99):
        report.figure(
            f"latency_p{percent}_ms",
            harness.percentile(latencies["atelier"], percent),
            "ms",
            baseline="bare celery task",
            baseline_value=harness.percentile(latencies["bare"], percent),
            target="<= 50 ms" if percent == 50 else None,
            jobs=jobs,
        )
    rates = {arm: [r.rate for r in runs] for arm, runs in results.items()}
    jobs = f"{args.throughput_jobs} no-op jobs submitted at once, one worker process"
    report.figure(
        "throughput_jobs_per_s",
        harness.median(rates["atelier"]),
        "jobs/s",
        baseline="bare celery",
        baseline_value=harness.median(rates["bare"]),
        runs=rates["atelier"],
        jobs=jobs,
    )
    report.ratio(
        "throughput_ratio", rates["atelier"], rates["bare"], arm="atelier",
        baseline="bare celery", target=">= 0.33", jobs=jobs,
    )  # fmt: skip


if __name__ == "__main__":
    main()
