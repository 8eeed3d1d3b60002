"""What a new user meets first: odd input refused at submit in one line (exit 2, nothing
stored), and a failed job's reason on the last line of `atelier run` and `atelier wait`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.stacks import REPO, Stack

LONG = "x" * 300


def atelier(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    environment.update(ATELIER_HOME=str(home), PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("kind", "assignment", "expected"),
    [
        ("dcgan", f"dataset={LONG}", "cannot be read (File name too long)"),
        ("dcgan", f"dataset=/tmp/{LONG}/images", "cannot be read (File name too long)"),
        ("text-lm", f"corpus=/tmp/{LONG}", "cannot be read (File name too long)"),
        ("style-transfer", f"content=/tmp/{LONG}.png", "File name too long"),
        ("deepdream", f"backbone_weights=/tmp/{LONG}.h5", "cannot be read (File name too long)"),
        ("dcgan", "learning_rate=Infinity", "field 'learning_rate': Input should be a finite"),
        ("vae", "learning_rate=NaN", "field 'learning_rate': Input should be a finite number"),
        ("cgan", "label_noise=-Infinity", "field 'label_noise': Input should be a finite"),
        ("text-lm", "temperatures=[0.5, Infinity]", "field 'temperatures.1'"),
        ("style-transfer", "content_weight=Infinity", "field 'content_weight'"),
    ],
)
def test_odd_input_is_refused_in_one_line(
    tmp_path: Path, kind: str, assignment: str, expected: str
) -> None:
    result = atelier(tmp_path, "submit", kind, "--set", assignment)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"atelier: error: {kind}: ") and expected in result.stderr
    assert result.stderr.count("\n") == 1 and len(result.stderr) < 400
    listing = atelier(tmp_path, "list", "--json")
    assert listing.returncode == 0 and json.loads(listing.stdout) == []


def test_a_failed_job_says_why_on_the_last_line(embedded_stack: Stack) -> None:
    """`atelier run`, `atelier wait` and `atelier watch` end a failed job with its code,
    message and where to look, and exit 1."""
    ran = embedded_stack.cli("run", "counter", "--set", "nan_at_step=2", "--set", "steps=4")
    assert ran.returncode == 1, ran.stderr
    last = ran.stdout.strip().splitlines()[-1]
    job_id = ran.stdout.split()[1]  # "job <id> submitted"
    assert last == (
        f"{job_id} failed: nan_loss: loss became NaN at step 2 "
        f"(history: atelier events {job_id})"
    )
    for command in ("wait", "watch"):
        result = embedded_stack.cli(command, job_id)
        assert result.returncode == 1 and result.stdout.strip().splitlines()[-1] == last


def test_the_workers_log_is_named_when_atelier_run_started_them() -> None:
    from datetime import UTC, datetime

    from scheduler.cli import _ending
    from scheduler.client import JobView

    now = datetime.now(UTC)
    view = JobView(
        "a1b2", "dcgan", "failed", "gpu", 0, 1, 3, 0.5, 3, 6, 1, {}, None, None, None, None,
        "error", "RuntimeError: planned", now, now, now, {}, [],
    )  # fmt: skip
    line = _ending(view, Path("/home/u/.atelier/logs/up.log"))
    assert line == (
        "a1b2 failed: error: RuntimeError: planned (history: atelier events a1b2; "
        "workers' log: /home/u/.atelier/logs/up.log)"
    )
