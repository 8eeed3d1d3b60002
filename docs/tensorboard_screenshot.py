"""Make docs/images/tensorboard.png: a real sweep of two small DCGANs on the embedded
stack, served by `atelier tensorboard --sweep` and photographed by headless Chromium.

    apt-get install chromium && python3 docs/tensorboard_screenshot.py

Takes a few minutes on 2 CPU cores. Nothing here runs in the tests or CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

OUT = Path(__file__).parent / "images" / "tensorboard.png"
PORT = 6123
SPEC = {
    "dataset": "glyphs",
    "image_size": 28,
    "epochs": 5,
    "steps_per_epoch": 30,
    "dataset_size": 960,
    "samples": 16,
}


def atelier(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *args], env=env, check=True,
        capture_output=True, text=True,
    )  # fmt: skip
    return done.stdout


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="atelier-shot-"))
    env = {**os.environ, "ATELIER_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    stack = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "up", "--workers", "1"], env=env, cwd=home,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    board = None
    try:
        sets = [a for name, value in SPEC.items() for a in ("--set", f"{name}={value}")]
        grid = ["--grid", "learning_rate=0.0001,0.0004"]
        sweep = json.loads(atelier(env, "sweep", "dcgan", *grid, *sets, "--json"))
        for job in sweep["jobs"]:
            atelier(env, "wait", job, "--timeout", "1800")
        board = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "tensorboard", "--sweep", sweep["sweep"],
             "--port", str(PORT)],
            env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_runs(2)
        OUT.parent.mkdir(exist_ok=True)
        subprocess.run(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--window-size=1500,1100", "--virtual-time-budget=30000",
             f"--screenshot={OUT}", f"http://127.0.0.1:{PORT}/?darkMode=false#timeseries"],
            check=True, capture_output=True,
        )  # fmt: skip
        print(f"wrote {OUT}")
    finally:
        for process in (board, stack):
            if process is not None:
                process.terminate()
                process.wait(timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def wait_for_runs(count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/data/runs", timeout=5) as reply:
                if len(json.load(reply)) >= count:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit("TensorBoard did not list the runs")


if __name__ == "__main__":
    main()
