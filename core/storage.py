"""Where the files that outlive a worker live: stored inputs, checkpoints and outputs.

Everything is named by a key, a relative POSIX path (`inputs/<sha256>.png`,
`outputs/<job>/<run>/sample/epoch_0001.png`). Rows record keys, never a host's path, so
any machine that reaches the store reads what another wrote. Two backends:

- `DirectoryStore`, the default: ATELIER_HOME; a key is the file under it, published
  crash-safely (core.publish) and read in place.
- `ObjectStore`: an S3-compatible bucket, `ATELIER_STORAGE_URL=s3://bucket/prefix`, through
  boto3 (the AWS SDK: endpoint, credentials, region and profile come from the environment
  and config files exactly as the AWS tools take them, so MinIO, Ceph, R2 and AWS all
  work). A PUT makes an object appear whole or not at all; reads are downloaded once into
  the cache (ATELIER_CACHE_DIR) and checked against their recorded sha256.

A published key is never changed afterwards (a taken name gets the first free
`<stem>.<n><suffix>`), except content-addressed inputs, whose bytes are their name; so a
cached copy never goes stale.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from core.errors import UserError, detail
from core.publish import TEMPORARY_SUFFIX, fsync_file, publish, sha256_of
from core.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30
SDK_ATTEMPTS = 3
"""boto3's own tries per call (standard retry mode); callers retry outages beyond that."""


NO_BUCKET = "the bucket does not exist (create it, or fix ATELIER_STORAGE_URL)"


class StorageUnavailable(Exception):
    """The store could not be reached (its network, its server): worth trying again."""


class StorageError(UserError):
    """The store is misconfigured (a bad URL, a missing bucket, refused credentials)."""


class CorruptFile(ValueError):
    """A stored file whose bytes do not match the sha256 recorded for it."""


@dataclass(frozen=True)
class Stored:
    key: str
    sha256: str
    bytes: int


class Storage(ABC):
    url: str
    """The store as a person names it: a folder or an s3:// URL."""

    @abstractmethod
    def publish(
        self, key: str, write: Callable[[Path], object], *, replace: bool = False
    ) -> Stored:
        """Have `write(path)` write a local file, then make it `key`, or, with `key` taken
        and no `replace`, the first free name after it; readers see all of it or nothing."""

    @abstractmethod
    def local_path(self, key: str, sha256: str | None = None) -> Path:
        """A local file holding `key`'s bytes (downloaded into the cache first, checked
        against `sha256` when given). FileNotFoundError if there is no such key."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; no error if it is gone already."""

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Every key under the folder `prefix` (temporary files included)."""

    @abstractmethod
    def sizes(self, prefix: str) -> dict[str, int]:
        """Every key under the folder `prefix` with its size in bytes."""

    @abstractmethod
    def folders(self, prefix: str) -> list[str]:
        """The names of the folders directly under the folder `prefix`, sorted."""

    def delete_folder(self, prefix: str, keep: Collection[str] = ()) -> None:
        """Remove every key under the folder `prefix` except those in `keep`."""
        for key in self.keys(prefix):
            if key not in keep:
                self.delete(key)

    @abstractmethod
    def location(self, key: str) -> str:
        """Where a person opens `key`: a local path, or an s3:// URL."""

    def download(self, key: str, target: Path, sha256: str) -> Path:
        """A verified copy of `key` at `target` on this machine."""
        source = self.local_path(key)
        verify(source, sha256, key)  # whichever backend: what the user gets is checked
        target.parent.mkdir(parents=True, exist_ok=True)
        return publish(target, lambda path: shutil.copyfile(source, path), replace=True).path


def verify(path: Path, sha256: str, key: str) -> None:
    actual = sha256_of(path)
    if actual != sha256:
        raise CorruptFile(f"{key}: sha256 {actual[:12]} does not match the recorded {sha256[:12]}")


def check_key(key: str) -> str:
    """Keys are made by Atelier from plain names; refuse anything that could leave the store."""
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"not a storage key: {key!r}")
    return key


def free_names(key: str) -> Iterator[str]:
    path = PurePosixPath(key)
    yield key
    number = 2
    while True:
        yield str(path.with_name(f"{path.stem}.{number}{path.suffix}"))
        number += 1


# --- a directory ---------------------------------------------------------------------------


class DirectoryStore(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def publish(
        self, key: str, write: Callable[[Path], object], *, replace: bool = False
    ) -> Stored:
        published = publish(self.path(key), write, replace=replace)
        return Stored(self.key_of(published.path), published.sha256, published.bytes)

    def key_of(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def local_path(self, key: str, sha256: str | None = None) -> Path:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no stored file {key!r} in {self.root}")
        return path

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> list[str]:
        folder = self.path(prefix)
        return sorted(self.key_of(path) for path in folder.rglob("*") if path.is_file())

    def sizes(self, prefix: str) -> dict[str, int]:
        files = (path for path in self.path(prefix).rglob("*") if path.is_file())
        return {self.key_of(path): path.stat().st_size for path in sorted(files)}

    def folders(self, prefix: str) -> list[str]:
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        return sorted(path.name for path in folder.iterdir() if path.is_dir())

    def delete_folder(self, prefix: str, keep: Collection[str] = ()) -> None:
        super().delete_folder(prefix, keep)
        folder = self.path(prefix)
        # The folders left empty go too, deepest first (a path sorts after its parent).
        for path in [*sorted(folder.rglob("*"), reverse=True), folder]:
            if path.is_dir():
                with contextlib.suppress(OSError):  # not empty: it holds a kept file
                    path.rmdir()

    def location(self, key: str) -> str:
        return str(self.path(key))


# --- an S3-compatible bucket ---------------------------------------------------------------


class ObjectStore(Storage):
    def __init__(self, url: str, cache_dir: Path, client: S3Client | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"ATELIER_STORAGE_URL must be s3://bucket/prefix, got {url!r}")
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/") + "/" if parsed.path.strip("/") else ""
        self.cache = cache_dir / "objects" / self.bucket / self.prefix
        self.uploads = cache_dir / "uploads"
        self._client = client

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def object_name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def publish(
        self, key: str, write: Callable[[Path], object], *, replace: bool = False
    ) -> Stored:
        self.uploads.mkdir(parents=True, exist_ok=True)
        temporary = self.uploads / f".{uuid.uuid4().hex}{TEMPORARY_SUFFIX}"
        try:
            write(temporary)
            digest, size = sha256_of(temporary), temporary.stat().st_size
            final = key if replace else self._free_name(key)
            with _calls(self):
                self.client.upload_file(
                    str(temporary), self.bucket, self.object_name(final),
                    ExtraArgs={"Metadata": {"sha256": digest}},
                )  # fmt: skip
            self._keep(temporary, final)  # this host reads it back without a download
        finally:
            temporary.unlink(missing_ok=True)
        return Stored(final, digest, size)

    def _free_name(self, key: str) -> str:
        """The first free name: a run is the only writer under its own folder."""
        for name in free_names(key):
            if not self.exists(name):
                return name
        raise AssertionError("unreachable")

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            with _calls(self):
                self.client.head_object(Bucket=self.bucket, Key=self.object_name(key))
        except ClientError as error:
            if _status(error) == 404:
                return False
            raise
        return True

    def _keep(self, temporary: Path, key: str) -> None:
        cached = self.cache / key
        cached.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, cached)

    def local_path(self, key: str, sha256: str | None = None) -> Path:
        cached = self.cache / check_key(key)
        if cached.is_file() and (sha256 is None or sha256_of(cached) == sha256):
            return cached
        return self._fetch(key, cached, sha256)

    def _fetch(self, key: str, cached: Path, sha256: str | None) -> Path:
        from botocore.exceptions import ClientError

        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_name(f".{cached.name}.{uuid.uuid4().hex[:8]}{TEMPORARY_SUFFIX}")
        try:
            with _calls(self):
                self.client.download_file(self.bucket, self.object_name(key), str(temporary))
            if sha256 is not None:
                verify(temporary, sha256, key)
            fsync_file(temporary)
            os.replace(temporary, cached)
        except ClientError as error:
            if _status(error) == 404:
                raise FileNotFoundError(f"no stored object {key!r} in {self.url}") from None
            raise
        finally:
            temporary.unlink(missing_ok=True)
        return cached

    def delete(self, key: str) -> None:
        with _calls(self):
            self.client.delete_object(Bucket=self.bucket, Key=self.object_name(key))
        (self.cache / key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> list[str]:
        return [key for key, _, _ in self._objects(self._folder(prefix))]

    def sizes(self, prefix: str) -> dict[str, int]:
        return {key: size for key, size, _ in self._objects(self._folder(prefix))}

    def folders(self, prefix: str) -> list[str]:
        under = self._folder(prefix)
        found: list[str] = []
        with _calls(self):
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=under, Delimiter="/"):
                for item in page.get("CommonPrefixes", []):
                    found.append(item["Prefix"][len(under) :].rstrip("/"))
        return sorted(name for name in found if name)

    def _folder(self, prefix: str) -> str:
        return self.object_name(prefix).rstrip("/") + "/"

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_name(key)}"

    def listing(self) -> list[tuple[str, int, str]]:
        """(key, bytes, ETag) of every object under the store's prefix."""
        return self._objects(self.prefix)

    def _objects(self, under: str) -> list[tuple[str, int, str]]:
        """(key, bytes, ETag) of the objects whose names start with `under`, sorted."""
        found: list[tuple[str, int, str]] = []
        with _calls(self):
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=under):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    if key and not key.endswith("/"):  # a folder marker is no file
                        found.append((key, int(item["Size"]), str(item["ETag"])))
        return sorted(found)

    def fetch_to(self, key: str, target: Path) -> None:
        """Download `key` to `target`, whole or not at all."""
        self._fetch(key, target, None)


def s3_client() -> S3Client:
    """A client configured by the environment as the AWS CLI is (AWS_ENDPOINT_URL,
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_PROFILE, config
    files), with short timeouts so that an unreachable store is told quickly."""
    import boto3
    from botocore.config import Config

    for name in [name for name, value in os.environ.items() if name.startswith("AWS_")]:
        if not os.environ[name]:  # compose passes an unset variable on as empty
            del os.environ[name]

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "max_attempts": SDK_ATTEMPTS},
    )
    return boto3.session.Session().client("s3", config=config)


def _status(error: Any) -> int:
    response = getattr(error, "response", {}) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    if code in ("404", "NoSuchKey", "NotFound"):
        return 404
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


@contextmanager
def _calls(store: ObjectStore) -> Iterator[None]:
    """Translate boto3's errors: unreachable -> StorageUnavailable, misconfigured ->
    StorageError, both one line naming the store; a missing key's ClientError passes."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
    )

    where = store.url
    try:
        yield
    except (ConnectionError, HTTPClientError) as error:
        raise StorageUnavailable(f"object store {where} unreachable: {detail(error)}") from None
    except NoCredentialsError:
        message = f"object store {where}: no credentials (set AWS_ACCESS_KEY_ID)"
        raise StorageError(message) from None
    except S3UploadFailedError as error:
        if "NoSuchBucket" in str(error):
            raise StorageError(f"object store {where}: {NO_BUCKET}") from None
        raise StorageError(f"object store {where}: upload failed: {detail(error)}") from None
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "NoSuchBucket":
            raise StorageError(f"object store {where}: {NO_BUCKET}") from None
        status = _status(error)
        if status in (0, 404):
            raise
        if status >= 500:
            raise StorageUnavailable(f"object store {where}: {detail(error)}") from None
        raise StorageError(f"object store {where}: {detail(error)}") from None
    except BotoCoreError as error:
        raise StorageUnavailable(f"object store {where}: {detail(error)}") from None


# --- the store of these settings -----------------------------------------------------------

_opened: dict[tuple[str | None, Path, Path], Storage] = {}
_opening = threading.Lock()


def open_storage(settings: Settings) -> Storage:
    """The store `settings` name (one per process and settings: boto3 clients are
    thread-safe and costly to make)."""
    identity = (settings.storage_url, settings.home, settings.cache_dir)
    with _opening:
        if identity not in _opened:
            url = settings.storage_url
            _opened[identity] = (
                ObjectStore(url, settings.cache_dir) if url else DirectoryStore(settings.home)
            )
        return _opened[identity]
