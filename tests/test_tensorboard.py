"""TensorBoard over real runs: a text-lm job paused and resumed on a real worker shows each
step once, its per-epoch texts and its hyperparameters; `atelier tensorboard` serves a
sweep's runs by name over HTTP. (A worker killed mid-run: tests/test_kill_resume.py
checks every killed case's TensorBoard run.)"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.data import write_corpus
from tests.fixtures.jobs import finished, running_stack, wait_running
from tests.fixtures.stacks import Stack
from tests.fixtures.tensorboard import HPARAMS_TAG, board_runs

TEXT = {
    "architecture": "lstm",
    "epochs": 3,
    "batch_size": 16,
    "sequence_length": 20,
    "stride": 4,
    "lstm_units": 256,
    "steps_per_epoch": 30,
    "generate_length": 20,
    "checkpoint_every": 8,
    "seed": 3,
}
STEPS = TEXT["epochs"] * TEXT["steps_per_epoch"]


@pytest.fixture(scope="module")
def board_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack("embedded", tmp_path_factory.mktemp("board"), workers=1) as stack:
        yield stack


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("board-corpus"), files=1)


def test_a_paused_and_resumed_job_shows_each_step_once(
    board_stack: Stack, corpus: Path, tmp_path: Path
) -> None:
    stack = board_stack
    job_id = stack.client.submit("text-lm", {**TEXT, "corpus": str(corpus)})
    wait_running(stack, job_id, min_step=5, timeout=120)
    stack.client.pause(job_id)
    stack.wait_for(lambda: stack.client.get(job_id).status == "paused", 60, "the pause")
    paused_at = stack.client.get(job_id).step
    assert paused_at is not None and paused_at < STEPS
    stack.client.resume(job_id)
    view = finished(stack, job_id, timeout=180)
    assert view.resumed_from_step == paused_at

    board = board_runs(stack, [job_id], tmp_path)[job_id]
    assert board.folder.name == f"text-lm-{job_id[:8]}"
    assert board.scalar_steps("step/loss") == list(range(1, STEPS + 1))
    epoch_ends = [TEXT["steps_per_epoch"] * epoch for epoch in (1, 2, 3)]
    assert board.scalar_steps("loss") == epoch_ends
    metrics = [e for e in stack.client.events(job_id) if e["type"] == "metrics"]
    assert board.scalar("loss") == pytest.approx({e["step"]: e["loss"] for e in metrics})
    texts = {o.step: Path(o.location).read_text() for o in view.outputs if o.role == "sample"}
    assert board.texts("sample") == texts and sorted(texts) == epoch_ends
    assert len(board.events.Tensors(HPARAMS_TAG)) == 1
    segments = sorted(o.name for o in view.outputs if o.role == "tensorboard")
    assert len(segments) >= 2, "the paused run and the resumed one each recorded events"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_atelier_tensorboard_serves_a_sweep_s_runs_by_name(
    board_stack: Stack, corpus: Path
) -> None:
    stack = board_stack
    shared = {**TEXT, "epochs": 1, "steps_per_epoch": 2, "lstm_units": 16, "corpus": str(corpus)}
    swept = stack.cli(
        "sweep", "text-lm", "--grid", "learning_rate=0.01,0.001",
        *(a for name, value in shared.items() for a in ("--set", f"{name}={value}")),
        "--json", check=True,
    )  # fmt: skip
    sweep = json.loads(swept.stdout)
    for job_id in sweep["jobs"]:
        finished(stack, job_id, timeout=180)

    port = free_port()
    board = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "tensorboard", "--sweep", sweep["sweep"],
         "--port", str(port)],
        env=stack.env, cwd=stack.home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        runs = _runs_served(port, board)
    finally:
        board.terminate()
        board.wait(timeout=30)
    expected = {
        f"text-lm-{job_id[:8]} learning_rate={rate}"
        for job_id, rate in zip(sweep["jobs"], ("0.01", "0.001"), strict=True)
    }
    assert set(runs) == expected


def _runs_served(port: int, board: subprocess.Popen[bytes], timeout: float = 90) -> list[str]:
    """The run names TensorBoard lists once it answers and has read both runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert board.poll() is None, board.stdout.read() if board.stdout else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as reply:
                runs = json.load(reply)
        except OSError:
            runs = []
        if len(runs) == 2:
            return list(runs)
        time.sleep(0.5)
    raise AssertionError(f"TensorBoard on port {port} did not list two runs")
