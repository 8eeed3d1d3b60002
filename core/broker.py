"""The broker connection: plain Redis clients beside Celery, and waking the scheduler."""

from __future__ import annotations

import contextlib
import os
from functools import cache
from urllib.parse import urlparse

import redis

from core import redis_keys
from core.settings import Settings, load_settings


def redis_client(settings: Settings, timeout: float | None = 5.0) -> redis.Redis:
    url = settings.broker_url
    if url.startswith("redis+socket://"):
        parsed = urlparse(url)
        return redis.Redis(
            unix_socket_path=parsed.path, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


@cache
def _waker(url: str, pid: int) -> redis.Redis:
    return redis_client(load_settings({"ATELIER_BROKER_URL": url}), timeout=0.5)


def wake_scheduler(settings: Settings) -> None:
    """Best effort: a scheduler that misses this still ticks within a second."""
    if settings.embedded_broker and not settings.redis_socket.exists():
        return
    with contextlib.suppress(redis.RedisError, OSError):
        client = _waker(settings.broker_url, os.getpid())
        pipeline = client.pipeline()  # queued one by one: see core.presence.live_workers
        pipeline.lpush(redis_keys.WAKE, 1)
        pipeline.ltrim(redis_keys.WAKE, 0, 0)
        pipeline.execute()
