"""Live progress for Flower, sent from a thread of its own: the job never waits for the
broker (an outage of it would otherwise stall training at every progress report), and
reports that come while one is being sent are folded into the newest."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from core.outage import Outage

log = logging.getLogger("atelier.live")


class LiveProgress(threading.Thread):
    def __init__(self, publish: Callable[[dict[str, Any]], None], name: str) -> None:
        super().__init__(name=f"live-progress-{name}", daemon=True)
        self.publish = publish
        self.broker = Outage.of("broker", log)
        self._latest: dict[str, Any] | None = None
        self._changed = threading.Condition()
        self._stopped = False

    def offer(self, values: dict[str, Any]) -> None:
        """Send `values` soon (instead of any report not sent yet)."""
        with self._changed:
            self._latest = values
            self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()

    def run(self) -> None:
        while True:
            with self._changed:
                while self._latest is None and not self._stopped:
                    self._changed.wait()
                values, self._latest = self._latest, None
                if self._stopped or values is None:
                    return
            try:
                self.publish(values)
            except Exception as error:  # live display only: the database has the progress
                pause = self.broker.failed(error)
                with self._changed:
                    self._changed.wait(timeout=pause)
            else:
                self.broker.succeeded()
