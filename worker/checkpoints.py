"""Checkpoint files: one .npz holding arrays and JSON metadata, published atomically
(core.publish) under a name of its own, `step_<step>.npz` in the run's folder, and never
replaced: which one a resume trusts is decided by the database (db.jobs.record_checkpoint),
under the run's lease.

A resume tries the job's latest checkpoint, then the one before it: if the latest cannot
be read (a torn disk write, a truncated copy), loading falls back to the previous one.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from core.publish import Published, publish
from kinds.contract import Checkpoint

log = logging.getLogger("atelier.checkpoints")

META_KEY = "__atelier_meta__"
FILE_PATTERN = "step_*.npz"


class CheckpointStore:
    """A run's checkpoint files, in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, checkpoint: Checkpoint) -> Published:
        meta = {"step": checkpoint.step, "meta": dict(checkpoint.meta)}
        arrays = {name: np.asarray(value) for name, value in checkpoint.arrays.items()}
        if META_KEY in arrays:
            raise ValueError(f"checkpoint array name {META_KEY!r} is reserved")
        fields = {**arrays, META_KEY: np.frombuffer(_json(meta), dtype=np.uint8)}

        def write(path: Path) -> None:
            with open(path, "wb") as handle:
                # numpy's default, spelled out so no array name can be taken for it
                np.savez(handle, allow_pickle=True, **fields)

        return publish(self.folder / f"step_{checkpoint.step:08d}.npz", write)

    def saved(self) -> list[Path]:
        """This folder's checkpoint files, the last written first (a single writer's
        latest; a job's runs follow the database instead)."""
        files = self.folder.glob(FILE_PATTERN)
        return sorted(files, key=lambda path: path.stat().st_mtime_ns, reverse=True)


def load_checkpoint(paths: Iterable[Path]) -> Checkpoint | None:
    """The first readable checkpoint of `paths` (newest first), or None."""
    for path in paths:
        try:
            return _read(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
            log.warning("checkpoint %s unreadable (%s); trying the previous one", path, error)
    return None


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def _read(path: Path) -> Checkpoint:
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as archive:
        meta = json.loads(archive[META_KEY].tobytes())
        arrays = {name: archive[name] for name in archive.files if name != META_KEY}
    return Checkpoint(step=int(meta["step"]), arrays=arrays, meta=meta["meta"])
