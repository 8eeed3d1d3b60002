"""Atelier's configuration, read from the environment once per process.

With nothing set, everything lives under ./.atelier: an SQLite database and the unix
socket of the embedded Redis that `atelier up` starts.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.durations import DurationError, parse_duration
from core.errors import UserError

DEFAULT_MODEL_CACHE_ENTRIES = 8
"""Built models and compiled steps a worker process keeps between jobs, by default."""
DEFAULT_PREEMPT_AFTER_SECONDS = 300.0
"""A job runs at least this long before a job of higher priority may take its slot: it
has loaded its data and built its model, and will save a checkpoint on stopping."""


class SettingsError(UserError):
    """An ATELIER_* environment variable has a value Atelier cannot use."""


@dataclass(frozen=True)
class Settings:
    home: Path
    """This machine's Atelier folder: the default store of inputs, outputs and checkpoints
    (without ATELIER_STORAGE_URL), the SQLite database, the embedded Redis, logs."""
    database_url: str
    """SQLAlchemy URL: SQLite file by default, postgresql+psycopg://… in production."""
    broker_url: str
    """Redis URL for Celery; the embedded Redis' unix socket by default."""
    lease_seconds: float
    """How long a running job stays owned without a heartbeat before it is run again."""
    retry_backoff_seconds: float
    """First retry delay of a failed attempt; doubles on each further attempt."""
    visibility_timeout_seconds: int
    """Redis redelivers an unacknowledged message after this; must outlast the longest job
    (a redelivery of a job that is still running is refused by its live lease)."""
    model_cache_entries: int
    """Built models and compiled steps a worker process keeps between jobs (least
    recently used dropped first)."""
    storage_url: str | None = None
    """Where inputs, checkpoints and outputs live: None for ATELIER_HOME itself, or an
    S3-compatible bucket, `s3://bucket/prefix` (core.storage)."""
    cache_dir: Path = Path(".atelier-cache")
    """This machine's copies of stored files it read (an object store's), and datasets."""
    webhook_secret: str | None = None
    """The key of the HMAC-SHA256 signature of notifications (`--notify`); without it
    submit refuses `--notify` and nothing is sent."""
    webhook_retry_seconds: float = 3600.0
    """How long a notification that fails is retried (with growing pauses) before it is
    given up."""
    webhook_timeout_seconds: float = 5.0
    """How long one try of a notification waits for the receiver's answer."""
    preempt_after_seconds: float = DEFAULT_PREEMPT_AFTER_SECONDS
    """A running job is preempted for one of higher priority only after running this long."""
    max_running_per_owner: int | None = None
    """Queued and running jobs one owner may have at once (None: no cap)."""
    time_limits: Mapping[str, float] = field(default_factory=dict)
    """Queue -> the time limit (seconds) of its jobs submitted without `--time-limit`."""

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url == f"redis+socket://{embedded_socket(self.home)}"

    @property
    def redis_socket(self) -> Path:
        return embedded_socket(self.home)

    @property
    def outputs_dir(self) -> Path:
        return self.home / "outputs"

    @property
    def inputs_dir(self) -> Path:
        return self.home / "inputs"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    home = Path(env.get("ATELIER_HOME", ".atelier")).resolve()
    return Settings(
        home=home,
        database_url=env.get("ATELIER_DATABASE_URL", f"sqlite:///{home / 'atelier.db'}"),
        broker_url=env.get("ATELIER_BROKER_URL", f"redis+socket://{embedded_socket(home)}"),
        lease_seconds=_positive(env, "ATELIER_LEASE_SECONDS", 60.0),
        retry_backoff_seconds=_positive(env, "ATELIER_RETRY_BACKOFF_SECONDS", 30.0),
        visibility_timeout_seconds=int(
            _positive(env, "ATELIER_VISIBILITY_TIMEOUT_SECONDS", 172800)
        ),
        model_cache_entries=int(
            _positive(env, "ATELIER_MODEL_CACHE_ENTRIES", DEFAULT_MODEL_CACHE_ENTRIES)
        ),
        preempt_after_seconds=_positive(
            env, "ATELIER_PREEMPT_AFTER_SECONDS", DEFAULT_PREEMPT_AFTER_SECONDS
        ),
        max_running_per_owner=(
            int(_positive(env, "ATELIER_MAX_RUNNING_PER_OWNER", 1))
            if env.get("ATELIER_MAX_RUNNING_PER_OWNER")
            else None
        ),
        storage_url=_storage_url(env),
        cache_dir=Path(env.get("ATELIER_CACHE_DIR") or user_cache(env) / "atelier").resolve(),
        time_limits=_time_limits(env.get("ATELIER_TIME_LIMITS", "")),
        webhook_secret=env.get("ATELIER_WEBHOOK_SECRET") or None,
        webhook_retry_seconds=_positive(env, "ATELIER_WEBHOOK_RETRY_SECONDS", 3600.0),
        webhook_timeout_seconds=_positive(env, "ATELIER_WEBHOOK_TIMEOUT_SECONDS", 5.0),
    )


def _time_limits(text: str) -> dict[str, float]:
    """`gpu=12h,cpu=30m`: each queue's default time limit."""
    limits = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        queue, sep, duration = item.partition("=")
        if not sep or not queue.strip():
            raise SettingsError(f"ATELIER_TIME_LIMITS takes queue=duration,..., got {item!r}")
        try:
            limits[queue.strip()] = parse_duration(duration, f"ATELIER_TIME_LIMITS {queue}")
        except DurationError as error:
            raise SettingsError(str(error)) from None
    return limits


def _storage_url(env: Mapping[str, str]) -> str | None:
    url = env.get("ATELIER_STORAGE_URL") or None
    if url is not None and (not url.startswith("s3://") or len(url) <= len("s3://")):
        raise SettingsError(f"ATELIER_STORAGE_URL must be s3://bucket[/prefix], got {url!r}")
    return url


def user_cache(env: Mapping[str, str]) -> Path:
    """The user's cache folder (XDG's rule; ~/.cache)."""
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive number from `env`: whole if `default` is an int."""
    text = env.get(name)
    if text is None:
        return default
    try:
        value = int(text) if isinstance(default, int) else float(text)
    except ValueError:
        value = 0
    if not value > 0 or value == float("inf"):
        kind = "whole number" if isinstance(default, int) else "number"
        raise SettingsError(f"{name} must be a positive {kind}, got {text!r}")
    return value


UNIX_SOCKET_PATH_MAX = 100


def embedded_socket(home: Path) -> Path:
    """The embedded Redis' socket: under ATELIER_HOME, unless that path is too long
    for a unix socket; then a short path in the temp folder, named after the home."""
    path = home / "redis" / "redis.sock"
    if len(str(path)) <= UNIX_SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"atelier-{digest}.sock"
