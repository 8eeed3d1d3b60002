"""Atelier's configuration, read from the environment once per process.

With nothing set, everything lives under ./.atelier: an SQLite database and the unix
socket of the embedded Redis that `atelier up` starts.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    """Root of inputs, outputs and checkpoints; shared storage when workers span machines."""
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
        lease_seconds=float(env.get("ATELIER_LEASE_SECONDS", "60")),
        retry_backoff_seconds=float(env.get("ATELIER_RETRY_BACKOFF_SECONDS", "30")),
        visibility_timeout_seconds=int(env.get("ATELIER_VISIBILITY_TIMEOUT_SECONDS", "172800")),
    )


UNIX_SOCKET_PATH_MAX = 100


def embedded_socket(home: Path) -> Path:
    """The embedded Redis' socket: under ATELIER_HOME, unless that path is too long
    for a unix socket; then a short path in the temp folder, named after the home."""
    path = home / "redis" / "redis.sock"
    if len(str(path)) <= UNIX_SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"atelier-{digest}.sock"
