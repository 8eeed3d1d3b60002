"""Plain Redis access beside Celery: waking the scheduler and reading worker presence."""

from __future__ import annotations

import contextlib
from urllib.parse import urlparse

import redis

from scheduler.settings import Settings

WAKE_KEY = "atelier:wake"
"""A list the scheduler blocks on; pushing to it makes the next tick happen now."""
WORKER_KEY_PREFIX = "atelier:worker:"
"""One expiring key per live worker, holding its queues and concurrency as JSON."""


def redis_client(settings: Settings, timeout: float | None = 5.0) -> redis.Redis:
    url = settings.broker_url
    if url.startswith("redis+socket://"):
        parsed = urlparse(url)
        return redis.Redis(
            unix_socket_path=parsed.path, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def wake_scheduler(settings: Settings) -> None:
    """Best effort: a scheduler that misses this still ticks within a second."""
    if settings.embedded_broker and not settings.redis_socket.exists():
        return
    with contextlib.suppress(redis.RedisError, OSError):
        client = redis_client(settings, timeout=0.5)
        client.lpush(WAKE_KEY, 1)
        client.ltrim(WAKE_KEY, 0, 0)
        client.close()
