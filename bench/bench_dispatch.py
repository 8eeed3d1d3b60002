"""Dispatch overhead: a no-op job through Atelier against a bare Celery task on the same
embedded Redis, both with one prefork worker process and the same Celery settings.

    python bench/bench_dispatch.py [--latency-jobs 100] [--throughput-jobs 300]

Prints submit→start latency p50/p99 and jobs/s for both, and the ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.02


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(
        ATELIER_HOME=str(home),
        ATELIER_EXTRA_KINDS="noop=bench.kinds",
        PYTHONPATH=str(REPO),
    )
    return env


def start(env: dict[str, str], home: Path) -> list[subprocess.Popen[bytes]]:
    log = open(home / "bench.log", "ab")  # noqa: SIM115
    up = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "up", "--workers", "1", "--queues", "gpu"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    bare = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.kinds:bare_app", "worker", "-Q", "bare",
         "-c", "1", "-P", "prefork", "--without-gossip", "--without-mingle", "-l", "WARNING"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return [up, bare]


def atelier_latency(client, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        job_id = client.submit("noop", {})
        view = client.wait(job_id, timeout=60, poll=0.002)
        latencies.append((view.started_at - view.created_at).total_seconds())
    return latencies


def atelier_throughput(client, count: int) -> float:
    before = client.count("succeeded")
    began = time.perf_counter()
    for _ in range(count):
        client.submit("noop", {})
    while client.count("succeeded") < before + count:
        time.sleep(POLL_SECONDS)
    return count / (time.perf_counter() - began)


def bare_latency(app, redis_client, count: int) -> list[float]:
    from bench.kinds import BARE_STARTS_KEY

    latencies = []
    for _ in range(count):
        app.send_task("bench.bare_noop", args=[time.time()], queue="bare")
        _, stamp = redis_client.blpop([BARE_STARTS_KEY], timeout=60)
        sent, started = map(float, stamp.split())
        latencies.append(started - sent)
    return latencies


def bare_throughput(app, redis_client, count: int) -> float:
    from bench.kinds import BARE_STARTS_KEY

    redis_client.delete(BARE_STARTS_KEY)
    began = time.perf_counter()
    for _ in range(count):
        app.send_task("bench.bare_noop", args=[time.time()], queue="bare")
    while redis_client.llen(BARE_STARTS_KEY) < count:
        time.sleep(POLL_SECONDS)
    return count / (time.perf_counter() - began)


def percentiles(values: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.array(values) * 1000, [50, 99])
    return float(p50), float(p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-jobs", type=int, default=100)
    parser.add_argument("--throughput-jobs", type=int, default=300)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    env = environment(home)
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    from bench.kinds import bare_app
    from core.broker import redis_client
    from core.settings import load_settings
    from scheduler.client import Client

    processes = start(env, home)
    try:
        settings = load_settings()
        client = Client(settings)
        client.wait(client.submit("noop", {}), timeout=60)  # stack up and warm
        redis = redis_client(settings, timeout=70)
        bare_latency(bare_app, redis, 3)  # warm

        a_lat = percentiles(atelier_latency(client, args.latency_jobs))
        b_lat = percentiles(bare_latency(bare_app, redis, args.latency_jobs))
        a_rate = atelier_throughput(client, args.throughput_jobs)
        b_rate = bare_throughput(bare_app, redis, args.throughput_jobs)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)

    print(f"submit→start latency (ms)   p50      p99     ({args.latency_jobs} jobs, one at a time)")
    print(f"  atelier no-op job       {a_lat[0]:7.1f}  {a_lat[1]:7.1f}")
    print(f"  bare celery task        {b_lat[0]:7.1f}  {b_lat[1]:7.1f}")
    print(f"throughput ({args.throughput_jobs} jobs submitted at once, 1 worker process)")
    print(f"  atelier                 {a_rate:7.1f} jobs/s")
    print(f"  bare celery             {b_rate:7.1f} jobs/s")
    print(f"  ratio atelier/bare      {a_rate / b_rate:7.2f}  (target >= 0.33)")


if __name__ == "__main__":
    main()
