"""Crash-safe file publication: write aside, fsync, link or rename into place.

A reader of the final name sees a whole file, never a torn one, even across a power
cut: the new file is written under a name unique to its writer, flushed to disk, then
put in place, and the folder's entry is flushed. A write that fails removes its
temporary file.

By default a published file is never changed afterwards: it is linked in under its name,
or, when that name is taken, under the first free `<stem>.<n><suffix>`; the caller records
the name it got (a job's runs record theirs in the database, which readers follow). Only
content-addressed files, whose name is their content, are published with `replace`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

BLOCK_BYTES = 1 << 20
TEMPORARY_SUFFIX = ".tmp"
"""Temporary files are hidden (a leading dot) and end with this."""


@dataclass(frozen=True)
class Published:
    path: Path
    sha256: str
    bytes: int


def publish(target: Path, write: Callable[[Path], object], *, replace: bool = False) -> Published:
    """Have `write(path)` write a temporary file, then make it `target` (or, without
    `replace` and with `target` taken, the first free name after it) atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    temporary = temporary.with_name(temporary.name + TEMPORARY_SUFFIX)
    try:
        write(temporary)
        fsync_file(temporary)
        digest, size = sha256_of(temporary), temporary.stat().st_size
        if replace:
            os.replace(temporary, target)
            final = target
        else:
            final = _link_free(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_dir(target.parent)
    return Published(final, digest, size)


def _link_free(temporary: Path, target: Path) -> Path:
    for candidate in _names(target):
        try:
            os.link(temporary, candidate)  # fails if the name exists: nothing is replaced
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links: rename, if the name is free
            if candidate.exists():
                continue
            os.rename(temporary, candidate)
        return candidate
    raise AssertionError("unreachable")


def _names(target: Path) -> Iterator[Path]:
    yield target
    number = 2
    while True:
        yield target.with_name(f"{target.stem}.{number}{target.suffix}")
        number += 1


def is_temporary(path: Path) -> bool:
    """A temporary file of `publish` (its writer may have died before removing it)."""
    return path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX)


def publish_copy(source: Path, target: Path, *, replace: bool = False) -> Published:
    """A crash-safe copy of `source` at `target`."""
    return publish(target, lambda temporary: shutil.copyfile(source, temporary), replace=replace)


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
