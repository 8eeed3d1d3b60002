"""Waiting out an outage of the database or the broker: growing pauses between tries,
and one log line when an outage starts and one when it ends, not one per try."""

from __future__ import annotations

import logging
import threading
import time
from typing import ClassVar

from core.errors import one_line

FIRST_PAUSE_SECONDS = 0.5
LONGEST_PAUSE_SECONDS = 30.0


class Outage:
    """The state of one dependency (`what`, e.g. "database at db:5432") as its user sees
    it: `failed` after a failed try (returns how long to wait before the next),
    `succeeded` after a good one. `Outage.of(what, log)` is the one tracker of that
    dependency in this process, so that its threads together log one line per outage."""

    _shared: ClassVar[dict[str, Outage]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def of(cls, what: str, log: logging.Logger) -> Outage:
        with cls._lock:
            if what not in cls._shared:
                cls._shared[what] = cls(what, log)
            return cls._shared[what]

    def __init__(
        self,
        what: str,
        log: logging.Logger,
        first: float = FIRST_PAUSE_SECONDS,
        longest: float = LONGEST_PAUSE_SECONDS,
    ) -> None:
        self.what, self.log = what, log
        self.first, self.longest = first, longest
        self.tries = 0
        self.since: float | None = None
        self._state = threading.Lock()

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException) -> float:
        with self._state:
            if self.since is None:
                self.since = time.monotonic()
                self.log.warning("%s unreachable (%s); retrying", self.what, _reason(error))
            pause: float = min(self.longest, self.first * 2.0**self.tries)
            self.tries += 1
            return pause

    def succeeded(self) -> None:
        with self._state:
            if self.since is not None:
                lasted = time.monotonic() - self.since
                self.log.warning("%s reachable again after %.0f s", self.what, lasted)
            self.since, self.tries = None, 0


def _reason(error: BaseException) -> str:
    """The driver's own words where a library wraps them (SQLAlchemy's `orig`)."""
    return one_line(getattr(error, "orig", None) or error)
