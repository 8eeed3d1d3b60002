"""What a new user meets first: odd input refused at submit in one line (exit 2, nothing
stored), and a failed job's reason on the last line of `atelier run` and `atelier wait`."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.stacks import REPO, Stack

# Keras 3.15 calls np.array(tensor) in get_weights/save, which numpy 2.4 flags.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
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
        f"{job_id} failed: nan_loss: loss became NaN at step 2 (history: atelier events {job_id})"
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
        "error", "RuntimeError: planned", now, now, now, {}, [], "u", True, None, 9.0, None,
        None,
    )  # fmt: skip
    line = _ending(view, Path("/home/u/.atelier/logs/up.log"))
    assert line == (
        "a1b2 failed: error: RuntimeError: planned (history: atelier events a1b2; "
        "workers' log: /home/u/.atelier/logs/up.log)"
    )


CORPUS_WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "dogs",
    "ran",
    "over",
    "green",
    "hills",
    "and",
    "birds",
    "sang",
]


def write_plain_corpus(folder: Path) -> Path:
    """A corpus of the user's: neither "this" nor "movie" in it."""
    rng = random.Random(3)
    folder.mkdir()
    for index in range(4):
        words = " ".join(rng.choice(CORPUS_WORDS) for _ in range(150))
        (folder / f"{index}.txt").write_text(words)
    return folder


def test_text_lm_on_ones_own_corpus_needs_no_prompt(tmp_path: Path) -> None:
    from kinds.text_lm import IMDB_PROMPT, Spec, run
    from tests.fixtures.local_context import LocalContext

    assert Spec().prompt == IMDB_PROMPT == "this movie"  # the reference's, for its corpus
    corpus = write_plain_corpus(tmp_path / "corpus")
    spec = Spec(
        corpus=str(corpus), epochs=1, steps_per_epoch=2, batch_size=4, sequence_length=16,
        vocab_size=100, embed_dim=16, latent_dim=32, num_heads=1, generate_length=5,
        temperatures=[1.0],
    )  # fmt: skip
    assert spec.prompt is None
    ctx = LocalContext(tmp_path / "job")
    run(spec, ctx)
    text = (ctx.output_dir / "sample" / "epoch_0001.txt").read_text()
    match = re.search(r"prompt: '([^']+)'", text)
    assert match is not None, text
    prompt = match[1].split()
    assert len(prompt) == 4 and set(prompt) <= set(CORPUS_WORDS)
    assert f"\n--- temperature 1\n{match[1]} " in text


def test_a_prompt_the_corpus_does_not_know_is_refused_at_submit(tmp_path: Path) -> None:
    corpus = write_plain_corpus(tmp_path / "corpus")
    cases = {
        ("--set", "prompt=zebra quokka"): "no word of the prompt 'zebra quokka' is in the",
        ("--set", "architecture=lstm", "--set", "prompt=QXZ"): "no character of the prompt",
    }
    for args, expected in cases.items():
        result = atelier(tmp_path, "submit", "text-lm", "--set", f"corpus={corpus}", *args)
        assert result.returncode == 2 and expected in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    known = atelier(
        tmp_path, "submit", "text-lm", "--set", f"corpus={corpus}", "--set", "prompt=a zebra"
    )
    assert known.returncode == 0, known.stderr
    listing = json.loads(atelier(tmp_path, "list", "--json").stdout)
    assert [job["spec"]["prompt"] for job in listing] == ["a zebra"]
