"""The per-process model cache: built models and compiled steps survive between jobs, so
the second job of a kind and shape on a warm worker starts without rebuilding."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any


class ProcessModelCache:
    def __init__(self) -> None:
        self._entries: dict[tuple[Hashable, ...], Any] = {}
        self._lock = threading.Lock()
        self.builds: Counter[tuple[Hashable, ...]] = Counter()
        self.hits: Counter[tuple[Hashable, ...]] = Counter()

    def get_or_build(self, key: tuple[Hashable, ...], build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._entries:
                self.hits[key] += 1
                return self._entries[key]
            value = build()
            self._entries[key] = value
            self.builds[key] += 1
            return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


PROCESS_CACHE = ProcessModelCache()
"""The cache of this worker process (one process per GPU)."""
