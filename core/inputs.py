"""The input store: files named in a spec are copied at submit into the store under a
content-addressed key (`inputs/<sha256>.png`), so every worker, on any machine, reads
exactly what was submitted, even if the original changes or disappears, and the same file
submitted twice is stored once. Specs keep the key."""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from core.publish import sha256_of
from core.storage import Storage

STORE_FOLDER = "inputs"


def store_inputs(spec: dict[str, Any], fields: tuple[str, ...], store: Storage) -> dict[str, Any]:
    """The spec with each input-file field (a path or a list of paths) replaced by its key."""
    return _each(spec, fields, lambda value: store_file(Path(value), store))


def resolve_inputs(spec: dict[str, Any], fields: tuple[str, ...], store: Storage) -> dict[str, Any]:
    """The spec with stored inputs as local files on this machine."""
    return _each(spec, fields, lambda key: str(store.local_path(key, PurePosixPath(key).stem)))


def _each(spec: dict[str, Any], fields: tuple[str, ...], change: Any) -> dict[str, Any]:
    changed = dict(spec)
    for field in fields:
        value = changed.get(field)
        if isinstance(value, str):
            changed[field] = change(value)
        elif isinstance(value, list):
            changed[field] = [change(item) for item in value]
    return changed


def input_keys(spec: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """The spec as `store_inputs` would make it, without storing anything."""
    return _each(spec, fields, lambda value: input_key(Path(value)))


def input_key(source: Path) -> str:
    return f"{STORE_FOLDER}/{sha256_of(source)}{source.suffix.lower()}"


def store_file(source: Path, store: Storage) -> str:
    key = input_key(source)
    if not store.exists(key):  # content-addressed: the same bytes may be written twice
        store.publish(key, lambda path: shutil.copyfile(source, path), replace=True)
    return key
