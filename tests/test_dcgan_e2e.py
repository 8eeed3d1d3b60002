"""DCGAN through real worker processes: training on both backends; warm workers that
reuse their built models and submit-time checks on the embedded stack (the backend plays
no part in them). A worker killed mid-job: tests/test_kill_resume.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.fixtures.data import enlarged
from tests.fixtures.jobs import assert_refused_at_submit, output_paths
from tests.fixtures.stacks import Stack

TINY = {
    "dataset": "glyphs",
    "image_size": 28,
    "batch_size": 8,
    "latent_dim": 16,
    "dataset_size": 128,
    "samples": 4,
    "seed": 7,
}
GRID_SIDE = 2 * (28 + 2) + 2  # 2x2 cells of 28 px with 2 px frames


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dcgan_trains_and_records_grids_and_generator(stack: Stack) -> None:
    job_id = stack.client.submit("dcgan", {**TINY, "epochs": 2, "steps_per_epoch": 3})
    view = stack.wait(job_id, timeout=240)
    assert view.status == "succeeded", view.error_message
    assert (view.step, view.total_steps, view.epoch) == (6, 6, 2)

    grids = output_paths(view, "sample")
    assert sorted(grids) == ["epoch_0001.png", "epoch_0002.png"]
    for grid in grids.values():
        with Image.open(grid) as image:
            assert (image.format, image.mode, image.size) == (
                "PNG",
                "L",
                enlarged((GRID_SIDE, GRID_SIDE)),
            )
    assert list(output_paths(view, "model")) == ["generator.keras"]
    # The same latent vectors render differently once the generator has trained on.
    assert sha(grids["epoch_0001.png"]) != sha(grids["epoch_0002.png"])

    metrics = [e for e in stack.client.events(job_id) if e["type"] == "metrics"]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(m["d_loss"] > 0 and m["g_loss"] > 0 for m in metrics)
    assert_loadable_generator(output_paths(view, "model")["generator.keras"])


def assert_loadable_generator(model_path: Path) -> None:
    # In a fresh interpreter: the test process keeps TensorFlow out of its own memory.
    probe = (
        "import keras, numpy as np, sys; m = keras.saving.load_model(sys.argv[1]);"
        "x = m.predict(np.zeros((3, 16), 'float32'), verbose=0);"
        "print(x.shape, float(x.min()) >= 0, float(x.max()) <= 1)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(model_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=120,
    )
    assert result.stdout.strip().splitlines()[-1] == "(3, 28, 28, 1) True True", result.stderr


def test_warm_worker_reuses_its_models_and_gets_the_same_result(embedded_stack: Stack) -> None:
    stack = embedded_stack
    # quality off: the glyph classifier's cache entry would count as a hit or a build too
    spec = {**TINY, "latent_dim": 12, "epochs": 1, "steps_per_epoch": 2, "deterministic": True}
    spec["quality"] = False
    seen_pids: set[int] = set()
    warm_jobs = 0
    grids = set()
    # Three jobs on two worker processes: at least one lands where the models exist.
    for _ in range(3):
        job_id = stack.client.submit("dcgan", spec)
        view = stack.wait(job_id, timeout=240)
        events = stack.client.events(job_id)
        pid = next(e["pid"] for e in events if e["type"] == "started")
        cache = next(e for e in events if e["type"] == "model_cache")
        if pid in seen_pids:
            warm_jobs += 1
            assert (cache["builds"], cache["hits"]) == (0, 1)
        else:
            assert (cache["builds"], cache["hits"]) == (1, 0)
        seen_pids.add(pid)
        grids.add(sha(output_paths(view, "sample")["epoch_0001.png"]))
    assert warm_jobs >= 1
    assert len(grids) == 1  # cold and warm starts train identically


def test_submit_does_not_load_tensorflow_or_celery(embedded_stack: Stack) -> None:
    stack = embedded_stack
    probe = (
        "import sys, json; from scheduler.cli import main;"
        "code = main(['submit', 'dcgan', '--queue', 'parked', '--json']);"
        "print(json.dumps({'code': code, 'heavy': sorted(m for m in ('tensorflow', 'keras',"
        " 'celery') if m in sys.modules)}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=stack.env, capture_output=True, text=True, timeout=60
    )
    lines = result.stdout.strip().splitlines()
    job_id = json.loads(lines[0])["id"]
    assert json.loads(lines[1]) == {"code": 0, "heavy": []}
    assert stack.client.cancel(job_id) == "cancelled"


def test_bad_dcgan_specs_and_datasets_are_refused_at_submit(
    embedded_stack: Stack, tmp_path: Path
) -> None:
    stack = embedded_stack
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert_refused_at_submit(
        stack,
        "dcgan",
        {
            ("epochs=-1",): "field 'epochs': Input should be greater than 0",
            ("batch_size=0",): "field 'batch_size': Input should be greater than 0",
            ("image_size=30",): "image_size must be a multiple of 4",
            (f"dataset={empty}",): str(empty),
            (f"dataset={corrupt}",): "a.png",
            ("dataset=imagenet21k",): "imagenet21k",
        },
        workers=3,
    )
