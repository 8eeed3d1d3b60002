"""Folders of data in an object store (`s3://bucket/prefix` for a dataset or a corpus):
listed at submit, synced by a worker into its cache before the job reads them.

A sync downloads only what is new or changed since the last one on this machine (by
ETag), removes what is gone, and leaves a folder the kind reads as a local one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from core.storage import ObjectStore, check_key

MANIFEST = ".atelier-sync.json"
"""In the synced folder: key -> ETag of what the last sync fetched (a hidden file, which
the kinds' file listings skip by suffix)."""


def _folder(url: str, cache_dir: Path) -> tuple[ObjectStore, Path]:
    """The folder's store and where this machine keeps its copy."""
    local = cache_dir / "folders" / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return ObjectStore(url, local), local / "files"


def list_folder(url: str, cache_dir: Path) -> list[tuple[str, int]]:
    """(name, bytes) of the folder's files."""
    store, _ = _folder(url, cache_dir)
    return [(key, size) for key, size, _ in store.listing()]


def sync_folder(url: str, cache_dir: Path) -> Path:
    """The folder's files on this machine (`<cache>/folders/<url digest>/files`)."""
    store, target = _folder(url, cache_dir)
    return _sync(store, target)


def _sync(store: ObjectStore, target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    manifest_path = target / MANIFEST
    try:
        fetched: dict[str, str] = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        fetched = {}
    listing = {key: etag for key, _, etag in store.listing()}
    for key, etag in listing.items():
        local = target / check_key(key)
        if fetched.get(key) != etag or not local.is_file():
            store.fetch_to(key, local)
            fetched[key] = etag
            manifest_path.write_text(json.dumps(fetched))  # progress survives a kill
    for key in set(fetched) - set(listing):
        (target / key).unlink(missing_ok=True)
        del fetched[key]
    manifest_path.write_text(json.dumps(fetched))
    return target
