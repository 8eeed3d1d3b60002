"""Reproducible jobs: seeded global generators, op determinism, and saved models whose
bytes depend on their weights only.

Atelier's kinds draw every random number from explicit keys (stateless ops, seeded
numpy generators, seed-generator states reset per job), so a job computes the same
whether its worker is cold or warm. Keras and TensorFlow are imported by the functions.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
ZIP_EPOCH, ZIP_EPOCH_TEXT = (1980, 1, 1, 0, 0, 0), "1980-01-01@00:00:00"


def configure_randomness(seed: int, deterministic: bool) -> None:
    """Seed Python's and numpy's global generators, for library code that draws from
    them, and switch op determinism on or off.

    TensorFlow's global seed is left alone: setting it clears TensorFlow's kernel caches,
    which costs a warm worker a third of a second per job, and no kind draws from it.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    set_op_determinism(deterministic)


def set_op_determinism(on: bool) -> None:
    """Op determinism is process-wide: a previous deterministic job must not leave it on."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    if on:
        tf.config.experimental.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def save_model(model: Any, path: Path) -> None:
    """`model.save` to any path (Keras insists on a .keras suffix), reproducibly: the
    same weights give the same bytes in any process.

    A .keras file is a zip whose metadata.json holds the time of saving, whose entries
    carry the time of writing, and whose config.json numbers shared objects by their
    memory address: the times become the zip epoch (1980-01-01), the numbers 1, 2, ...
    """
    with tempfile.TemporaryDirectory() as directory:
        saved = Path(directory) / "model.keras"
        model.save(saved)
        stable = Path(directory) / "stable.keras"
        _rewrite_stably(saved, stable)
        shutil.move(stable, path)


def _rewrite_stably(source_path: Path, target_path: Path) -> None:
    with zipfile.ZipFile(source_path) as source, zipfile.ZipFile(target_path, "w") as target:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == "metadata.json":
                metadata = json.loads(data)
                metadata["date_saved"] = ZIP_EPOCH_TEXT
                data = json.dumps(metadata).encode()
            elif entry.filename == "config.json":
                data = json.dumps(_renumber_shared_objects(json.loads(data), {})).encode()
            fixed = zipfile.ZipInfo(entry.filename, date_time=ZIP_EPOCH)
            fixed.compress_type = entry.compress_type
            fixed.external_attr = entry.external_attr
            target.writestr(fixed, data)


def _renumber_shared_objects(value: object, numbers: dict[object, int]) -> object:
    """`value` with every "shared_object_id" replaced by its order of first appearance."""
    if isinstance(value, list):
        return [_renumber_shared_objects(item, numbers) for item in value]
    if not isinstance(value, dict):
        return value
    renumbered: dict[object, object] = {}
    for key, item in value.items():
        if key == "shared_object_id":
            renumbered[key] = numbers.setdefault(item, len(numbers) + 1)
        else:
            renumbered[key] = _renumber_shared_objects(item, numbers)
    return renumbered


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
