"""The denoising-ae kind: spec, a run through a real worker (noisy / denoised / clean
previews, the autoencoder, falling loss, actual denoising), and the plain autoencoder
(noise_factor 0) in process. Resume, crash, warm cache, non-finite loss, imports and bad
specs: tests/test_kind_contract.py."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
from PIL import Image

from kinds.denoising_ae import DEFAULT_QUEUE, Spec, run
from tests.fixtures.data import enlarged
from tests.fixtures.jobs import events_of, finished, output_paths
from tests.fixtures.kind_cases import CASES
from tests.fixtures.local_context import LocalContext
from tests.fixtures.stacks import Stack
from tests.fixtures.trained import DENOISING_AE, training_jobs


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


def test_trains_and_denoises(embedded_stack: Stack) -> None:
    view = finished(embedded_stack, training_jobs(embedded_stack)["denoising-ae"], timeout=240)
    epochs, columns = DENOISING_AE["epochs"], DENOISING_AE["samples"]
    previews = output_paths(view, "sample")
    assert sorted(previews) == [f"epoch_{epoch:04d}.png" for epoch in range(1, epochs + 1)]
    for path in previews.values():
        with Image.open(path) as image:  # rows: noisy, denoised, clean
            size = (columns * 30 + 2, 3 * 30 + 2)
            assert (image.format, image.mode, image.size) == ("PNG", "L", enlarged(size))

    metrics = events_of(embedded_stack, view.id, "metrics")
    assert [m["epoch"] for m in metrics] == list(range(1, epochs + 1))
    assert metrics[-1]["loss"] < 0.9 * metrics[0]["loss"], metrics

    # The denoised row is closer to the clean row than the noisy row is.
    with Image.open(previews[f"epoch_{epochs:04d}.png"]) as image:
        factor = image.width // size[0]  # enlarged by whole factors: every factor-th pixel
        pixels = np.asarray(image, np.float32)[::factor, ::factor] / 255.0
    rows = [pixels[2 + r * 30 : 2 + r * 30 + 28, :] for r in range(3)]
    noisy, denoised, clean = rows
    assert np.mean((denoised - clean) ** 2) < np.mean((noisy - clean) ** 2)

    models = output_paths(view, "model")
    assert list(models) == ["autoencoder.keras"]
    model = models["autoencoder.keras"]

    import keras

    autoencoder = keras.saving.load_model(model)
    assert autoencoder(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 28, 28, 1)


def test_noise_factor_zero_is_the_plain_autoencoder(tmp_path: Path) -> None:
    spec = Spec(**{**CASES["denoising-ae"].values, "noise_factor": 0.0, "epochs": 4})
    ctx = LocalContext(tmp_path)
    run(spec, ctx)
    side = spec.image_size + 2
    for epoch in range(1, spec.epochs + 1):  # rows: images, reconstructions
        with Image.open(ctx.outputs[("sample", f"epoch_{epoch:04d}.png")]) as image:
            assert image.size == enlarged((spec.samples * side + 2, 2 * side + 2))
    losses = [event.values["loss"] for event in ctx.metric_events]
    assert len(losses) == spec.epochs, losses
    assert all(later < earlier for earlier, later in pairwise(losses)), losses
