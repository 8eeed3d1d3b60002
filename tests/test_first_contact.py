"""What a new user meets first: odd input refused at submit in one line (exit 2, nothing
stored), and a failed job's reason on the last line of `atelier run` and `atelier wait`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.stacks import REPO

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
