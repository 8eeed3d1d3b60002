"""Checkpoint files: one .npz holding arrays and JSON metadata, published whole (a file
written aside and put in place, an object PUT in one piece; core.storage) under a key of
its own, `step_<step>.npz` in the run's folder, and never replaced: which one a resume
trusts is decided by the database (db.jobs.record_checkpoint), under the run's lease.

A resume tries the job's latest checkpoint, then the one before it: if the latest cannot
be read (a torn disk write, a truncated copy), loading falls back to the previous one.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np

from core.storage import Storage, Stored
from kinds.contract import Checkpoint

log = logging.getLogger("atelier.checkpoints")

META_KEY = "__atelier_meta__"
FILE_NAME = re.compile(r"^step_(\d+)(?:\.(\d+))?\.npz$")
"""`step_<step>.npz`, or `step_<step>.<n>.npz` for a second save of the same step."""


class CheckpointStore:
    """A run's checkpoint files, under the key `folder` of `store`."""

    def __init__(self, store: Storage, folder: str) -> None:
        self.store = store
        self.folder = folder

    def save(self, checkpoint: Checkpoint) -> Stored:
        meta = {"step": checkpoint.step, "meta": dict(checkpoint.meta)}
        arrays = {name: np.asarray(value) for name, value in checkpoint.arrays.items()}
        if META_KEY in arrays:
            raise ValueError(f"checkpoint array name {META_KEY!r} is reserved")
        fields = {**arrays, META_KEY: np.frombuffer(_json(meta), dtype=np.uint8)}

        def write(path: Path) -> None:
            with open(path, "wb") as handle:
                # numpy's default, spelled out so no array name can be taken for it
                np.savez(handle, allow_pickle=True, **fields)

        return self.store.publish(f"{self.folder}/step_{checkpoint.step:08d}.npz", write)

    def saved(self) -> list[str]:
        """Keys of this folder's checkpoints, the last written first (a single writer's
        latest; a job's runs follow the database instead)."""
        found = []
        for key in self.store.keys(self.folder):
            match = FILE_NAME.match(PurePosixPath(key).name)
            if match:
                found.append(((int(match[1]), int(match[2] or 1)), key))
        return [key for _, key in sorted(found, reverse=True)]


def load_checkpoint(store: Storage, keys: Iterable[tuple[str, str | None]]) -> Checkpoint | None:
    """The first readable checkpoint of `keys` ((key, sha256 or None), newest first)."""
    for key, sha256 in keys:
        try:
            return _read(store.local_path(key, sha256))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
            # a torn or missing file (CorruptFile is a ValueError); an unreachable store
            # (StorageUnavailable) is not this checkpoint's fault and passes
            log.warning("checkpoint %s unreadable (%s); trying the previous one", key, error)
    return None


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def _read(path: Path) -> Checkpoint:
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as archive:
        meta = json.loads(archive[META_KEY].tobytes())
        arrays = {name: archive[name] for name in archive.files if name != META_KEY}
    return Checkpoint(step=int(meta["step"]), arrays=arrays, meta=meta["meta"])
