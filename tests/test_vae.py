"""The vae kind: its spec, what a run records in process, and a run through a real worker
(outputs, falling loss). Resume, crash, warm cache, non-finite loss, a worker killed
mid-job, imports and bad specs: tests/test_kind_contract.py and tests/test_kill_resume.py
(the case "vae" of tests/fixtures/kind_cases.py)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from kinds.vae import DEFAULT_QUEUE, Spec
from scheduler.client import JobView
from tests.fixtures.data import enlarged
from tests.fixtures.jobs import events_of, finished, output_paths
from tests.fixtures.kind_cases import CASES, KindRuns, output_files
from tests.fixtures.local_context import LocalContext
from tests.fixtures.stacks import Stack
from tests.fixtures.trained import VAE, training_jobs

TOTAL_STEPS = 8  # 64 images / 16 per batch, 2 epochs
METRICS = ("total_loss", "reconstruction_loss", "kl_loss")


@pytest.fixture(scope="module")
def reference(kind_runs: KindRuns) -> LocalContext:
    """An uninterrupted in-process run of the tiny spec (shared with the contract tests)."""
    return kind_runs.reference(CASES["vae"])


# --- spec -----------------------------------------------------------------------------


def test_defaults_follow_the_reference() -> None:
    spec = Spec()
    assert DEFAULT_QUEUE == "gpu"
    assert (spec.dataset, spec.image_size, spec.latent_dim, spec.batch_size) == (
        "glyphs",
        28,
        2,
        128,
    )
    assert (spec.epochs, spec.learning_rate, spec.grid_size, spec.grid_range) == (30, 1e-3, 30, 1)
    assert spec.channels == 1 and Spec(dataset="cifar10").channels == 3


# --- in-process training ----------------------------------------------------------------


def test_run_records_metrics_grids_and_models(reference: LocalContext) -> None:
    assert [call.step for call in reference.progress_calls] == list(range(1, TOTAL_STEPS + 1))
    assert [(e.epoch, e.step) for e in reference.metric_events] == [(1, 4), (2, 8)]
    for event in reference.metric_events:
        values = event.values
        assert sorted(values) == sorted([*METRICS, "fid"])  # fid: tests/test_quality.py
        assert event.notes == {"fid_features": "glyph_classifier"}
        assert math.isclose(
            values["total_loss"], values["reconstruction_loss"] + values["kl_loss"], rel_tol=1e-5
        )
        assert values["reconstruction_loss"] > 0 and values["kl_loss"] >= 0
    files = output_files(reference)
    models, grids = (
        ["model/decoder.keras", "model/encoder.keras"],
        ["sample/epoch_0001.png", "sample/epoch_0002.png"],
    )
    assert sorted(files) == models + grids
    for name in grids:
        image = Image.open(io.BytesIO(files[name]))
        assert (image.format, image.mode, image.size) == ("PNG", "L", enlarged((4 * 16, 4 * 16)))

    import keras

    encoder = keras.saving.load_model(reference.outputs[("model", "encoder.keras")])
    decoder = keras.saving.load_model(reference.outputs[("model", "decoder.keras")])
    z_mean, z_log_var = encoder(np.zeros((3, 16, 16, 1), np.float32))
    assert z_mean.shape == z_log_var.shape == (3, 2)
    assert decoder(np.zeros((3, 2), np.float32)).shape == (3, 16, 16, 1)


# --- through real workers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(embedded_stack: Stack) -> JobView:
    return finished(embedded_stack, training_jobs(embedded_stack)["vae"], timeout=240)


def test_trains_with_grids_models_and_falling_loss(embedded_stack: Stack, trained: JobView) -> None:
    epochs = VAE["epochs"]
    assert (trained.step, trained.total_steps, trained.epoch) == (60, 60, epochs)
    side = VAE["grid_size"] * 28
    grid_files = output_paths(trained, "sample")
    assert sorted(grid_files) == [f"epoch_{epoch:04d}.png" for epoch in range(1, epochs + 1)]
    for path in grid_files.values():
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "L", enlarged((side, side)))
    assert sorted(output_paths(trained, "model")) == ["decoder.keras", "encoder.keras"]

    metrics = events_of(embedded_stack, trained.id, "metrics")
    assert [m["epoch"] for m in metrics] == list(range(1, epochs + 1))
    first, last = metrics[0], metrics[-1]
    assert last["total_loss"] < 0.8 * first["total_loss"], (first, last)
    assert last["reconstruction_loss"] < first["reconstruction_loss"]
    assert all(m["kl_loss"] >= 0 for m in metrics)
