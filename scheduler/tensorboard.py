"""`atelier tensorboard`: one TensorBoard over the event files that jobs recorded.

TensorBoard reads a folder with one sub-folder per run. This module builds such a
folder from the database: one sub-folder per job, named so a person knows the run (its
kind, short id and, in a sweep, the fields the sweep varies), holding links to the
job's recorded event files (worker/summaries.py). Only recorded files are linked, so
TensorBoard never sees the events of a run that lost its lease or died before its
checkpoint. A bucket's files are fetched into the cache first. While TensorBoard runs,
the folder follows the jobs as their runs record more.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.storage import StorageUnavailable
from scheduler.client import Client, JobView
from scheduler.sweeps import swept_fields

log = logging.getLogger("atelier.tensorboard")

ROLE = "tensorboard"
"""The output role of event files (worker.summaries.ROLE; the scheduler does not import
the worker)."""
SYNC_SECONDS = 5.0
SHORT_ID = 8
UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")


def run_names(client: Client, views: Sequence[JobView]) -> dict[str, str]:
    """Job id -> its run's name: `<kind>-<short id>`, then in a sweep the values of the
    fields the sweep varies (`dcgan-1f2e3d4c learning_rate=0.0002,beta_1=0.5`)."""
    varied: dict[str, list[str]] = {}
    for sweep_id in {view.sweep_id for view in views if view.sweep_id is not None}:
        varied[sweep_id] = swept_fields([job.spec for job in client.sweep_jobs(sweep_id)])
    names = {}
    for view in views:
        name = f"{view.kind}-{view.id[:SHORT_ID]}"
        fields = varied.get(view.sweep_id or "", [])
        if fields:
            name += " " + ",".join(f"{field}={_shown(view.spec.get(field))}" for field in fields)
        names[view.id] = name
    return names


def _shown(value: Any) -> str:
    return UNSAFE.sub("_", str(value))


class Logdir:
    """A folder of runs for TensorBoard, kept in step with the chosen jobs' event files."""

    def __init__(self, client: Client, root: Path, job_ids: Sequence[str] | None) -> None:
        self.client, self.root = client, root
        self.job_ids = list(job_ids) if job_ids is not None else None
        self.names: dict[str, str] = {}

    def sync(self) -> int:
        """Link every recorded event file of the jobs (new jobs too when all are shown)
        and unlink those no longer recorded; returns how many files are linked."""
        views = self.client.jobs_with_outputs(ROLE, self.job_ids)
        missing = [view for view in views if view.id not in self.names]
        if missing:
            self.names.update(run_names(self.client, missing))
        linked = 0
        for view in views:
            folder = self.root / self.names[view.id]
            folder.mkdir(parents=True, exist_ok=True)
            wanted = {output.name: output for output in view.outputs}
            for stale in set(os.listdir(folder)) - set(wanted):
                (folder / stale).unlink()
            for name, output in wanted.items():
                link = folder / name
                if link.is_symlink():
                    linked += 1
                    continue
                try:
                    source = self.client.store.local_path(output.key, output.sha256)
                except (FileNotFoundError, StorageUnavailable) as error:
                    log.info("%s of job %s not shown yet: %s", name, view.id, error)
                    continue
                link.symlink_to(source)
                linked += 1
        return linked


def serve(
    client: Client,
    job_ids: Sequence[str] | None,
    *,
    port: int,
    host: str,
    stop: threading.Event,
) -> int:
    """Run TensorBoard over the jobs (all with event files when `job_ids` is None) until
    `stop` is set or TensorBoard exits; returns its exit status."""
    root = Path(tempfile.mkdtemp(prefix="tensorboard-", dir=_scratch(client)))
    try:
        logdir = Logdir(client, root, job_ids)
        files = logdir.sync()
        board = subprocess.Popen(
            [
                sys.executable, "-m", "tensorboard.main", "--logdir", str(root),
                "--port", str(port), "--host", host, "--reload_interval", str(SYNC_SECONDS),
            ],
        )  # fmt: skip
        runs = len(logdir.names)
        print(
            f"atelier tensorboard: http://{host}:{port}/ ({runs} runs, {files} event files); "
            "Ctrl-C to stop",
            flush=True,
        )
        while board.poll() is None and not stop.wait(SYNC_SECONDS):
            logdir.sync()
        if board.poll() is None:
            board.terminate()
        return board.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _scratch(client: Client) -> Path:
    folder = client.settings.cache_dir / "tensorboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
