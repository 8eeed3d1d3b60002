"""The denoising-ae kind: spec, exact resume in-process, and a run through a real worker
(noisy / denoised / clean previews, the autoencoder, falling loss, actual denoising)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from PIL import Image

from kinds.denoising_ae import DEFAULT_QUEUE, Spec, run
from scheduler.client import JobView
from tests.conftest import Stack
from tests.fixtures.local_context import LocalContext, StopRequested
from tests.fixtures.trained import DENOISING_AE, training_jobs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_defaults_follow_the_reference() -> None:
    spec = Spec()
    assert DEFAULT_QUEUE == "gpu"
    assert (spec.noise_factor, spec.encoding_dim, spec.batch_size, spec.epochs) == (
        0.55,
        32,
        256,
        50,
    )
    assert (spec.image_size, spec.learning_rate, spec.samples) == (28, 1e-3, 10)


@pytest.mark.parametrize(
    "changes",
    [
        {"noise_factor": -0.1},
        {"encoding_dim": 0},
        {"samples": 0},
        {"samples": 65},
        {"batch_size": 0},
        {"image_size": 10},
        {"noise_factor": "0.5"},
    ],
)
def test_spec_rejects(changes: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        Spec(**changes)


def test_stopped_and_resumed_run_is_identical(tmp_path: Path) -> None:
    spec = Spec(
        image_size=16, batch_size=16, dataset_size=48, epochs=2, samples=4, deterministic=True
    )
    reference = LocalContext(tmp_path / "reference")
    run(spec, reference)
    with pytest.raises(StopRequested):
        run(spec, LocalContext(tmp_path / "resumed", stop_at=2))
    resumed = LocalContext(tmp_path / "resumed")
    run(spec, resumed)
    assert resumed.progress_calls[0].step == 3
    assert resumed.metric_events == reference.metric_events
    for name in ("epoch_0001.png", "epoch_0002.png"):
        mine = (resumed.output_dir / "sample" / name).read_bytes()
        assert mine == (reference.output_dir / "sample" / name).read_bytes()


def test_trains_and_denoises(embedded_stack: Stack) -> None:
    view: JobView = embedded_stack.wait(training_jobs(embedded_stack)["denoising-ae"], timeout=240)
    assert view.status == "succeeded", view.error_message
    epochs, columns = DENOISING_AE["epochs"], DENOISING_AE["samples"]
    previews = {o.name: Path(o.path) for o in view.outputs if o.role == "sample"}
    assert sorted(previews) == [f"epoch_{epoch:04d}.png" for epoch in range(1, epochs + 1)]
    for path in previews.values():
        with Image.open(path) as image:  # rows: noisy, denoised, clean
            size = (columns * 30 + 2, 3 * 30 + 2)
            assert (image.format, image.mode, image.size) == ("PNG", "L", size)

    metrics = [e for e in embedded_stack.client.events(view.id) if e["type"] == "metrics"]
    assert [m["epoch"] for m in metrics] == list(range(1, epochs + 1))
    assert metrics[-1]["loss"] < 0.9 * metrics[0]["loss"], metrics

    # The denoised row is closer to the clean row than the noisy row is.
    with Image.open(previews[f"epoch_{epochs:04d}.png"]) as image:
        pixels = np.asarray(image, np.float32) / 255.0
    rows = [pixels[2 + r * 30 : 2 + r * 30 + 28, :] for r in range(3)]
    noisy, denoised, clean = rows
    assert np.mean((denoised - clean) ** 2) < np.mean((noisy - clean) ** 2)

    [model] = [Path(o.path) for o in view.outputs if o.role == "model"]
    assert model.name == "autoencoder.keras"

    import keras

    autoencoder = keras.saving.load_model(model)
    assert autoencoder(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 28, 28, 1)
