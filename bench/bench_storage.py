"""Checkpoints in a bucket against checkpoints in a directory: the time to save one (a
write aside, fsync and link in, against a write aside and a PUT to an S3 protocol
server) and to read it back on a machine that has no copy (in place, against a download
checked by sha256).

    python bench/bench_storage.py [--repeats 7] [--mb 21] [--quick] [--json FILE]

The bucket is moto's standalone server on loopback, in a process of its own: what it
measures is Atelier's side (boto3's transfer, the local copy, the sha256), not a real
store's network. The checkpoint is the size of the README's DCGAN's (21 MB at 28 px);
divide a save by the time between checkpoints for the share of a job's wall time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import harness
import numpy as np

from core.storage import DirectoryStore, ObjectStore, Storage
from kinds.contract import Checkpoint
from tests.fixtures.object_store import s3_server
from worker.checkpoints import CheckpointStore, load_checkpoint


def checkpoint_of(megabytes: float, step: int) -> Checkpoint:
    weights = np.random.default_rng(step).standard_normal(int(megabytes * (1 << 18)))
    return Checkpoint(step=step, arrays={"weights": weights.astype(np.float32)})


class Arm:
    """Saves and cold reads of one store, each save under a new step (keys never repeat)."""

    def __init__(self, store: Storage, megabytes: float) -> None:
        self.store, self.megabytes = store, megabytes
        self.checkpoints = CheckpointStore(store, "outputs/bench/run/checkpoints")
        self.step = 0

    def save(self) -> float:
        self.step += 1
        checkpoint = checkpoint_of(self.megabytes, self.step)
        began = time.perf_counter()
        self.saved = self.checkpoints.save(checkpoint)
        return time.perf_counter() - began

    def cold_read(self) -> float:
        if isinstance(self.store, ObjectStore):
            shutil.rmtree(self.store.cache, ignore_errors=True)  # another machine: no copy
        began = time.perf_counter()
        loaded = load_checkpoint(self.store, [(self.saved.key, self.saved.sha256)])
        assert loaded is not None and loaded.step == self.step
        return time.perf_counter() - began


def main() -> None:
    parser = harness.parser(__doc__ or "", repeats=7)
    parser.add_argument("--mb", type=float, default=21.0, help="checkpoint size")
    args = harness.parse(parser, quick={"repeats": 1, "mb": 1.0})
    report = harness.Report("storage", args)
    root = Path(tempfile.mkdtemp(prefix="atelier-bench-storage-"))
    try:
        with s3_server(root / "moto.log") as server:
            os.environ.update(server.env())
            arms = {
                "directory": Arm(DirectoryStore(root / "home"), args.mb),
                "bucket": Arm(ObjectStore(server.bucket(), root / "cache"), args.mb),
            }
            saves = harness.interleave({n: a.save for n, a in arms.items()}, args.repeats)
            reads = harness.interleave(
                {n: a.cold_read for n, a in arms.items()}, args.repeats, warmup=False
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.figure("directory_save_s", harness.median(saves["directory"]), "s", mb=args.mb)
    report.figure("bucket_save_s", harness.median(saves["bucket"]), "s", mb=args.mb)
    report.ratio(
        "bucket_save_ratio", saves["bucket"], saves["directory"],
        arm="bucket save s", baseline="directory save s",
    )  # fmt: skip
    report.ratio(
        "bucket_cold_read_ratio", reads["bucket"], reads["directory"],
        arm="bucket download+sha256 s", baseline="directory read s",
    )  # fmt: skip


if __name__ == "__main__":
    main()
