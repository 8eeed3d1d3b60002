"""CLI responsiveness: `atelier submit --help` and a real `atelier submit` (to a parked
queue: no worker takes it), against a bare `python -c pass` measured in the same run.

    python bench/bench_cli.py [--repeats 15] [--quick] [--json FILE]

Each command is a fresh process, as a user runs it; the three alternate (order reversed
every repeat) after one untimed run each (the first submit creates and migrates the
database). Median wall times; the interpreter's own start-up is the floor.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial

import harness


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, env=env, capture_output=True, check=True)
    return time.perf_counter() - began


def main() -> None:
    args = harness.parse(harness.parser(__doc__, repeats=15), quick={"repeats": 2})
    report = harness.Report("cli", args)
    home = tempfile.mkdtemp(prefix="atelier-bench-cli-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env |= {"ATELIER_HOME": home, "PYTHONPATH": str(harness.REPO)}
    cli = [sys.executable, "-m", "scheduler.cli"]
    commands = {
        "python": [sys.executable, "-c", "pass"],
        "help": [*cli, "submit", "--help"],
        "submit": [*cli, "submit", "dcgan", "--queue", "parked"],
    }
    try:
        times = harness.interleave(
            {name: partial(timed, command, env) for name, command in commands.items()},
            args.repeats,
            describe=lambda seconds: f"{seconds * 1000:.0f} ms",
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    ms = {name: [seconds * 1000 for seconds in values] for name, values in times.items()}
    python = harness.median(ms["python"])
    report.figure("python_startup_ms", python, "ms", runs=ms["python"], command="python -c pass")
    for name, figure in (("help", "submit_help_ms"), ("submit", "submit_dcgan_ms")):
        report.figure(
            figure,
            harness.median(ms[name]),
            "ms",
            baseline="python -c pass",
            baseline_value=python,
            target="well under 1500 ms",
            runs=ms[name],
            command="atelier " + " ".join(commands[name][3:]),
        )


if __name__ == "__main__":
    main()
