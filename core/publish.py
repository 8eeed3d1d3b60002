"""Crash-safe file publication: write aside, fsync, rename into place.

A reader of the final name sees the whole old file or the whole new one, never a torn
one, even across a power cut: the new file is written under a name unique to its writer,
flushed to disk, then renamed over the final name, and the folder's entry is flushed.
A write that fails removes its temporary file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class Published:
    path: Path
    sha256: str
    bytes: int


def publish(
    target: Path, write: Callable[[Path], object], *, keep_previous: Path | None = None
) -> Published:
    """Have `write(path)` write a temporary file, then make it `target` atomically.

    With `keep_previous`, an existing `target` is first renamed there (after the new file
    is on disk), so one earlier version survives beside the new one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(temporary)
        fsync_file(temporary)
        digest, size = sha256_of(temporary), temporary.stat().st_size
        if keep_previous is not None and target.exists():
            os.replace(target, keep_previous)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return Published(target, digest, size)


def publish_copy(source: Path, target: Path) -> Published:
    """A crash-safe copy of `source` at `target`."""
    return publish(target, lambda temporary: shutil.copyfile(source, temporary))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
