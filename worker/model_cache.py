"""The per-process model cache: built models and compiled steps survive between jobs, so
the second job of a kind and shape on a warm worker starts without rebuilding."""

from __future__ import annotations

import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


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
            value = build_reproducibly(build)
            self._entries[key] = value
            self.builds[key] += 1
            return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def build_reproducibly(build: Callable[[], T]) -> T:
    """Run `build` with Keras' layer-name counters starting from zero.

    Keras names layers from process-wide counters (conv2d_7, ...) and TensorFlow orders
    the sums in a traced gradient by op name, so the same model built after other models
    computes different low bits. Built from fresh counters, a model computes the same
    bits in every worker, whatever ran there before: a deterministic job resumed on
    another worker ends with the bytes of an uninterrupted run.
    """
    if "keras" not in sys.modules:
        return build()  # Keras loads inside `build`, with fresh counters
    from keras.src.backend.common import global_state

    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", defaultdict(int))
    try:
        return build()
    finally:
        global_state.set_global_attribute("object_name_uids", saved)


PROCESS_CACHE = ProcessModelCache()
"""The cache of this worker process (one process per GPU)."""
