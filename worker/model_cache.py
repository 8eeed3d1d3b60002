"""The per-process model cache: built models and compiled steps survive between jobs, so
the second job of a kind and shape on a warm worker starts without rebuilding.

It holds at most `max_entries` entries and drops the least recently used beyond that, so
a worker serving many shapes (style transfers of differently sized photos) does not keep
every model and its GPU memory for life. An entry built around another entry (a
compiled step around a cached backbone) puts that entry's `id()` in its key: the
dependency can be dropped and rebuilt while the dependent entry stays."""

from __future__ import annotations

import gc
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from core.settings import DEFAULT_MODEL_CACHE_ENTRIES
from kinds.reproducibility import build_reproducibly


class ProcessModelCache:
    def __init__(self, max_entries: int = DEFAULT_MODEL_CACHE_ENTRIES) -> None:
        self._entries: OrderedDict[tuple[Hashable, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries
        self.builds: Counter[tuple[Hashable, ...]] = Counter()
        self.hits: Counter[tuple[Hashable, ...]] = Counter()
        self.evictions = 0

    def get_or_build(self, key: tuple[Hashable, ...], build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits[key] += 1
                return self._entries[key]
            value = build_reproducibly(build)
            self._entries[key] = value
            self.builds[key] += 1
            self._evict()
            return value

    def keys(self) -> list[tuple[Hashable, ...]]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._entries)

    def _evict(self) -> None:
        dropped = 0
        while len(self._entries) > max(self.max_entries, 1):
            self._entries.popitem(last=False)
            dropped += 1
        if dropped:
            self.evictions += dropped
            gc.collect()  # traced functions and their models hold each other in cycles

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


PROCESS_CACHE = ProcessModelCache()
"""The cache of this worker process (one process per GPU)."""
