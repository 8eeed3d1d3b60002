"""The input store: files named in a spec are copied at submit into a content-addressed
folder under ATELIER_HOME, so every worker reads exactly what was submitted, even if the
original changes or disappears, and the same file submitted twice is stored once.

Specs keep the stored file as a path relative to ATELIER_HOME ("inputs/<sha256>.png"),
so workers that mount the shared home at another path still find it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.publish import publish_copy, sha256_of
from core.settings import Settings

STORE_FOLDER = "inputs"


def store_inputs(
    spec: dict[str, Any], fields: tuple[str, ...], settings: Settings
) -> dict[str, Any]:
    """The spec with each input-file field (a path or a list of paths) replaced by its copy."""
    stored = dict(spec)
    for field in fields:
        value = stored.get(field)
        if isinstance(value, str):
            stored[field] = store_file(Path(value), settings.home)
        elif isinstance(value, list):
            stored[field] = [store_file(Path(item), settings.home) for item in value]
    return stored


def resolve_inputs(spec: dict[str, Any], fields: tuple[str, ...], home: Path) -> dict[str, Any]:
    """The spec with stored inputs as absolute paths under this machine's ATELIER_HOME."""
    resolved = dict(spec)
    for field in fields:
        value = resolved.get(field)
        if isinstance(value, str):
            resolved[field] = str(home / value)
        elif isinstance(value, list):
            resolved[field] = [str(home / item) for item in value]
    return resolved


def store_file(source: Path, home: Path) -> str:
    digest = sha256_of(source)
    target = home / STORE_FOLDER / f"{digest}{source.suffix.lower()}"
    if not target.exists():
        publish_copy(source, target, replace=True)  # content-addressed: same bytes
    return f"{STORE_FOLDER}/{target.name}"
