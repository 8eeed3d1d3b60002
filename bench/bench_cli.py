"""CLI responsiveness: `atelier submit --help` and a real `atelier submit` (to a parked
queue, then cancelled), against a bare `python -c pass` measured in the same run.

    python bench/bench_cli.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    began = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - began, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="atelier-bench-cli-")
    env = {**os.environ, "ATELIER_HOME": home, "PYTHONPATH": str(REPO)}
    cli = [sys.executable, "-m", "scheduler.cli"]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "atelier submit --help": [*cli, "submit", "--help"],
        "atelier submit dcgan": [*cli, "submit", "dcgan", "--queue", "parked"],
    }
    timed(commands["atelier submit dcgan"], env)  # creates and migrates the database
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):  # interleaved, so machine noise hits all alike
        for name, command in commands.items():
            seconds, _ = timed(command, env)
            times[name].append(seconds)
    baseline = statistics.median(times["python -c pass"])
    print(f"median wall time over {args.repeats} runs (target: well under 1.5 s)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<24} {median * 1000:7.0f} ms   {median / baseline:5.1f}x python -c pass")


if __name__ == "__main__":
    main()
