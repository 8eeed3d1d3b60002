"""The storage layer (core.storage) on both backends, a directory and an S3 protocol
server (moto's, in a process of its own), and a stack whose files live only in the
bucket: a killed job resumes from its checkpoint there, and the client downloads what
it made, checked by sha256."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.storage import CorruptFile, DirectoryStore, ObjectStore, Storage, StorageUnavailable
from tests.fixtures.data import write_image_folder
from tests.fixtures.faults import fault_stack, redis_server
from tests.fixtures.jobs import events_of, wait_running
from tests.fixtures.object_store import S3Server, s3_server
from tests.fixtures.stacks import base_env, postgres_database
from tests.fixtures.tensorboard import board_runs


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def aws_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3.env()


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "directory":
        return DirectoryStore(tmp_path / "home")
    request.getfixturevalue("aws_env")
    url = request.getfixturevalue("s3").bucket()
    return ObjectStore(url, tmp_path / "cache")


def write_text(text: str) -> object:
    return lambda path: Path(path).write_text(text)


def forget_local_copies(store: Storage) -> None:
    """An object store's reader on another machine has no cached copy."""
    if isinstance(store, ObjectStore):
        shutil.rmtree(store.cache, ignore_errors=True)


def test_a_key_is_published_whole_and_never_replaced(store: Storage, tmp_path: Path) -> None:
    first = store.publish("outputs/j1/r1/sample/grid.png", write_text("one"))
    second = store.publish("outputs/j1/r1/sample/grid.png", write_text("two"))
    assert (first.key, second.key) == (
        "outputs/j1/r1/sample/grid.png", "outputs/j1/r1/sample/grid.2.png"
    )  # fmt: skip
    assert (first.sha256, first.bytes) == (hashlib.sha256(b"one").hexdigest(), 3)
    assert store.keys("outputs/j1") == [second.key, first.key]
    assert store.exists(first.key) and not store.exists("outputs/j1/r1/sample/none.png")
    forget_local_copies(store)
    assert store.local_path(first.key, first.sha256).read_text() == "one"
    copy = store.download(second.key, tmp_path / "mine" / "grid.png", second.sha256)
    assert copy.read_text() == "two"
    store.delete(first.key)
    assert store.keys("outputs/j1") == [second.key]
    with pytest.raises(FileNotFoundError):
        store.local_path(first.key)
    assert not [p for p in tmp_path.rglob(".*") if p.name.endswith(".tmp")]


def test_bytes_that_do_not_match_their_sha256_are_refused(
    store: Storage, tmp_path: Path, s3: S3Server
) -> None:
    stored = store.publish("outputs/j2/r1/model/g.keras", write_text("weights"))
    if isinstance(store, ObjectStore):  # the object changed behind Atelier's back
        s3.client().put_object(  # type: ignore[attr-defined]
            Bucket=store.bucket, Key=store.object_name(stored.key), Body=b"tampered"
        )
        forget_local_copies(store)
        with pytest.raises(CorruptFile, match="does not match the recorded"):
            store.local_path(stored.key, stored.sha256)
    else:
        assert isinstance(store, DirectoryStore)
        store.path(stored.key).write_text("tampered")
    with pytest.raises(CorruptFile, match="does not match the recorded"):
        store.download(stored.key, tmp_path / "out" / "g.keras", stored.sha256)
    assert not (tmp_path / "out" / "g.keras").exists()


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "outputs/../../x", "a//b", ""])
def test_a_key_cannot_leave_the_store(store: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="not a storage key"):
        store.publish(key, write_text("x"))


def test_an_unreachable_store_is_told_apart_from_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with s3_server(tmp_path / "moto.log") as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        store = ObjectStore(server.bucket(), tmp_path / "cache")
        stored = store.publish("inputs/a.txt", write_text("a"))
        with pytest.raises(FileNotFoundError, match=r"no stored object 'inputs/b\.txt'"):
            store.local_path("inputs/b.txt")
        server.stop()  # refused connections, as of a store that is down
        forget_local_copies(store)
        began = time.monotonic()
        with pytest.raises(StorageUnavailable, match="unreachable"):
            store.local_path(stored.key)
        assert time.monotonic() - began < 30


# --- a stack whose files live in the bucket ------------------------------------------------


def test_a_job_keeps_its_files_in_the_bucket_resumes_from_it_and_is_downloaded(
    tmp_path: Path, s3: S3Server, aws_env: dict[str, str]
) -> None:
    url = s3.bucket()
    database, drop = postgres_database()
    note = tmp_path / "note.txt"
    note.write_text("from the client's disk")
    env = {**s3.env(), "ATELIER_STORAGE_URL": url, "ATELIER_CACHE_DIR": str(tmp_path / "cache")}
    try:
        # A Redis of its own: the session's stacks share the test Redis database
        with (
            redis_server(tmp_path / "redis") as broker,
            fault_stack(
                tmp_path / "home", database_url=database, broker_url=broker.url, workers=2, **env
            ) as stack,
        ):
            job_id = stack.submit(
                "counter", steps=30, step_seconds=0.1, checkpoint_every=5, note=str(note)
            )
            running = wait_running(stack, job_id, min_step=12, timeout=60)
            assert running.worker_pid is not None
            os.kill(running.worker_pid, signal.SIGKILL)
            view = stack.wait(job_id, timeout=120)
            assert view.status == "succeeded", view.error_message
            assert view.attempts == 2 and view.resumed_from_step in (10, 15)
            assert len(events_of(stack, job_id, "resumed")) == 1

            by_name = {(o.role, o.name): o for o in view.outputs if o.role != "tensorboard"}
            assert sorted(by_name) == [
                ("checkpoint", "latest.npz"), ("checkpoint", "previous.npz"),
                ("result", "summary.json"),
            ]  # fmt: skip
            # TensorBoard reads the bucket's event files: each step once across the kill
            board = board_runs(stack, [job_id], tmp_path / "board")[job_id]
            assert board.scalar_steps("step/total") == list(range(1, 31))
            assert all(link.resolve().is_relative_to(tmp_path / "cache")
                       for link in board.folder.iterdir())  # fmt: skip
            for output in view.outputs:
                assert output.location == f"{url}/{output.key}"
                assert output.key.startswith(f"outputs/{job_id}/")
            assert not (stack.settings.home / "outputs").exists(), "nothing on a local disk"
            assert view.spec["note"].startswith("inputs/")

            listing = stack.cli("outputs", job_id, "--json", "--role", "result", check=True)
            [described] = json.loads(listing.stdout)
            assert set(described) >= {"key", "bytes", "sha256", "location"}
            fetched = stack.cli(
                "outputs", job_id, "--download", str(tmp_path / "got"), "--name", "summary.json",
                check=True,
            )  # fmt: skip
            summary_path = tmp_path / "got" / "result" / "summary.json"
            assert fetched.stdout.split() == [str(summary_path)]
            data = summary_path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == described["sha256"]
            assert json.loads(data) == {
                "total": 465.0, "started_from": view.resumed_from_step, "attempt": 2,
                "note": "from the client's disk",
            }  # fmt: skip
            checkpoints = [k for k in ObjectStore(url, tmp_path / "c2").keys("outputs")
                           if "/checkpoints/" in k]  # fmt: skip
            recorded = {by_name["checkpoint", n].key for n in ("latest.npz", "previous.npz")}
            assert set(checkpoints) == recorded, "superseded checkpoints are deleted"
    finally:
        drop()


def test_a_bad_storage_url_or_a_missing_bucket_is_one_line(tmp_path: Path, s3: S3Server) -> None:
    note = tmp_path / "note.txt"
    note.write_text("x")
    home = tmp_path / "home"
    home.mkdir()
    env = {**base_env(home), **s3.env()}
    cases = {
        "ftp://bucket/x": "ATELIER_STORAGE_URL must be s3://bucket[/prefix], got 'ftp://bucket/x'",
        "s3://no-such-bucket-here/x": "the bucket does not exist",
    }
    for url, expected in cases.items():
        result = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "submit", "counter", "--set", f"note={note}"],
            env={**env, "ATELIER_STORAGE_URL": url}, capture_output=True, text=True,
            cwd=home, timeout=60,
        )  # fmt: skip
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith("atelier: error: ") and expected in lines[0], lines
    listing = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "list", "--json"],
        env=env, capture_output=True, text=True, cwd=home, timeout=60,
    )  # fmt: skip
    assert json.loads(listing.stdout) == [], "nothing stored"


# --- datasets in a bucket -------------------------------------------------------------------


def upload_folder(s3: S3Server, folder: Path, url: str) -> None:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            s3.client().put_object(Bucket=bucket, Key=key, Body=path.read_bytes())  # type: ignore[attr-defined]


def test_a_dataset_in_a_bucket_is_checked_at_submit_and_synced_once(
    tmp_path: Path, s3: S3Server, aws_env: dict[str, str]
) -> None:
    bucket = s3.bucket().removeprefix("s3://").partition("/")[0]
    images = write_image_folder(tmp_path / "images" / "a", 10, size=(28, 28))
    write_image_folder(tmp_path / "images" / "b" / "deeper", 6, size=(28, 28), seed=1)
    (tmp_path / "images" / "README.txt").write_text("not an image")
    upload_folder(s3, images.parent, f"s3://{bucket}/digits")
    cache = tmp_path / "worker-cache"
    spec = dict(
        dataset=f"s3://{bucket}/digits", image_size=28, batch_size=8, latent_dim=16,
        steps_per_epoch=2, epochs=1, samples=4, deterministic=True,
    )  # fmt: skip
    with fault_stack(
        tmp_path / "home", workers=1, ATELIER_CACHE_DIR=str(cache), **aws_env
    ) as stack:
        refused = {
            f"s3://{bucket}/nothing-here": "holds no image files (.bmp",
            "s3://no-such-bucket-here/digits": "the bucket does not exist",
        }
        for url, expected in refused.items():
            result = stack.cli("submit", "dcgan", "--set", f"dataset={url}")
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], lines
        first = stack.wait(stack.submit("dcgan", **spec), timeout=240)
        assert first.status == "succeeded", first.error_message
        assert first.spec["dataset"] == f"s3://{bucket}/digits"  # the job names the bucket
        [copy] = list((cache / "folders").glob("*/files"))
        synced = {p.relative_to(copy).as_posix(): p for p in copy.rglob("*.png")}
        assert sorted(synced) == sorted(
            [f"a/{i}.png" for i in range(10)] + [f"b/deeper/{i}.png" for i in range(6)]
        )
        assert synced["a/3.png"].read_bytes() == (images / "3.png").read_bytes()
        times = {name: path.stat().st_mtime_ns for name, path in synced.items()}
        second = stack.wait(stack.submit("dcgan", **spec), timeout=240)
        assert second.status == "succeeded", second.error_message
        assert {name: p.stat().st_mtime_ns for name, p in synced.items()} == times, "no re-download"
        grids = [
            Path(o.location).read_bytes()
            for view in (first, second) for o in view.outputs if o.role == "sample"
        ]  # fmt: skip
        assert len(grids) == 2 and grids[0] == grids[1]  # same data, deterministic


def test_a_sync_follows_the_folder_as_it_changes(
    tmp_path: Path, s3: S3Server, aws_env: dict[str, str]
) -> None:
    from core.remote_folders import sync_folder

    url = s3.bucket() + "-folder"
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    client = s3.client()
    for name in ("one.txt", "two.txt"):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=name.encode())  # type: ignore[attr-defined]
    copy = sync_folder(url, tmp_path)
    assert sorted(p.name for p in copy.glob("*.txt")) == ["one.txt", "two.txt"]
    client.put_object(Bucket=bucket, Key=f"{prefix}/one.txt", Body=b"changed")  # type: ignore[attr-defined]
    client.delete_object(Bucket=bucket, Key=f"{prefix}/two.txt")  # type: ignore[attr-defined]
    client.put_object(Bucket=bucket, Key=f"{prefix}/sub/three.txt", Body=b"3")  # type: ignore[attr-defined]
    assert sync_folder(url, tmp_path) == copy
    files = {p.relative_to(copy).as_posix(): p.read_text() for p in copy.rglob("*.txt")}
    assert files == {"one.txt": "changed", "sub/three.txt": "3"}
