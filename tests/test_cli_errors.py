"""The CLI's error lines: a user's mistake is one line and exit 2; any other failure is
one line naming it and the log that holds its traceback, exit 1; never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.stacks import REPO


def atelier(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    environment.update(ATELIER_HOME=str(home), PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_user_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = {
        ("status", "no-such-job"): "no job 'no-such-job'",
        ("submit", "no-such-kind"): "unknown job kind 'no-such-kind'",
        ("submit", "dcgan", "--set", "epochs=0"): "field 'epochs'",
    }
    for args, expected in cases.items():
        result = atelier(tmp_path, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("atelier: error: ") and expected in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    bad_setting = atelier(tmp_path, "list", ATELIER_LEASE_SECONDS="soon")
    assert bad_setting.returncode == 2 and bad_setting.stderr.count("\n") == 1
    assert "ATELIER_LEASE_SECONDS must be a positive number, got 'soon'" in bad_setting.stderr


def test_other_failures_name_themselves_and_their_log(tmp_path: Path) -> None:
    """A database that cannot be opened is not the user's typo: exit 1, one line naming
    the error and where its traceback went."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the database's folder should be")
    url = f"sqlite:///{blocked / 'atelier.db'}"
    result = atelier(tmp_path, "list", ATELIER_DATABASE_URL=url)
    log = tmp_path / "logs" / "cli.log"
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("atelier: failed: ")
    assert f"(traceback in {log})" in result.stderr
    assert "Traceback (most recent call last)" in log.read_text()
    assert "atelier list" in log.read_text()
