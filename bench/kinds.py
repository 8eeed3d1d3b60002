"""Job kinds and Celery tasks defined only for the benchmarks."""

from __future__ import annotations

import time

import redis

from core.celery_app import make_app
from core.settings import load_settings
from kinds.contract import JobContext, JobSpec

DEFAULT_QUEUE = "gpu"
BARE_STARTS_KEY = "bench:bare:starts"


class Spec(JobSpec):
    """The no-op job: it starts, reports nothing and ends."""


def run(spec: Spec, ctx: JobContext) -> None:
    return None


bare_app = make_app(load_settings())
bare_app.conf.include = []


@bare_app.task(name="bench.bare_noop")
def bare_noop(sent_at: float) -> None:
    """The same no-op as a bare Celery task: records when it started."""
    client = redis.Redis.from_url(bare_app.conf.broker_url.replace("redis+socket://", "unix://"))
    client.rpush(BARE_STARTS_KEY, f"{sent_at} {time.time()}")
