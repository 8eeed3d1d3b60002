"""The cgan kind: spec (labelled datasets only), the class-conditioned networks, and a
run through a real worker (one grid row per class, generator, falling D loss). Resume,
crash, warm cache, non-finite loss, imports and bad specs: tests/test_kind_contract.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest
from PIL import Image

from kinds.cgan import DEFAULT_QUEUE, Spec
from kinds.datasets import load_images, load_labelled_images
from tests.fixtures.data import enlarged, write_image_folder
from tests.fixtures.jobs import events_of, finished, output_paths
from tests.fixtures.stacks import Stack
from tests.fixtures.trained import CGAN, training_jobs


def test_defaults_follow_the_reference() -> None:
    spec = Spec()
    assert DEFAULT_QUEUE == "gpu"
    assert (spec.dataset, spec.image_size, spec.samples_per_class) == ("glyphs", 28, 8)
    assert (spec.latent_dim, spec.batch_size, spec.learning_rate, spec.label_noise) == (
        (128, 32, 1e-4, 0.05)
    )
    assert spec.classes == 10 and Spec(dataset="cifar10").channels == 3


def test_image_folder_is_refused_for_want_of_labels(tmp_path: Path) -> None:
    write_image_folder(tmp_path, 1, (8, 8))
    with pytest.raises(pydantic.ValidationError, match="without class labels"):
        Spec(dataset=str(tmp_path))


def test_labelled_glyphs_are_the_unlabelled_ones_with_their_digits() -> None:
    images, labels = load_labelled_images("glyphs", 16, seed=4, limit=40)
    assert np.array_equal(images, load_images("glyphs", 16, seed=4, limit=40))
    assert labels.dtype == np.int32 and labels.shape == (40,)
    assert set(labels.tolist()) <= set(range(10)) and len(set(labels.tolist())) > 5


def test_keras_dataset_labels_follow_their_images(monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    images = np.repeat(np.arange(6, dtype=np.uint8) * 40, 32 * 32 * 3).reshape(6, 32, 32, 3)
    labels = np.array([[5], [0], [9], [1], [1], [3]], np.uint8)  # cifar10's (n, 1) labels
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: ((images, labels), None))
    pixels, classes = load_labelled_images("cifar10", 16, seed=0, limit=4)
    assert pixels.shape == (4, 16, 16, 3) and classes.dtype == np.int32
    kept = pixels[:, 0, 0, 0] // 40  # each image is one grey level: its index times 40
    assert len(set(kept.tolist())) == 4
    assert classes.tolist() == labels[kept, 0].tolist()


def test_networks_take_the_class() -> None:
    from kinds.cgan.model import build_discriminator, build_generator

    generator = build_generator(16, 1, 8, 10)
    discriminator = build_discriminator(16, 1, 10)
    latents = np.zeros((3, 8), np.float32)
    onehot = np.eye(10, dtype=np.float32)[[0, 4, 9]]
    images = np.asarray(generator([latents, onehot]))
    assert images.shape == (3, 16, 16, 1)
    assert discriminator([images, onehot]).shape == (3, 1)
    # The same latent vector with another class gives another image.
    assert not np.allclose(images[0], images[1])


def test_trains_with_class_rows_and_a_generator(embedded_stack: Stack) -> None:
    view = finished(embedded_stack, training_jobs(embedded_stack)["cgan"], timeout=240)
    epochs, steps = CGAN["epochs"], CGAN["steps_per_epoch"]
    assert (view.step, view.total_steps) == (epochs * steps, epochs * steps)
    grids = output_paths(view, "sample")
    assert sorted(grids) == [f"epoch_{epoch:04d}.png" for epoch in range(1, epochs + 1)]
    columns, side = CGAN["samples_per_class"], CGAN["image_size"]
    for path in grids.values():
        with Image.open(path) as image:  # ten rows (the classes), one column per latent
            size = (columns * (side + 2) + 2, 10 * (side + 2) + 2)
            assert (image.format, image.mode, image.size) == ("PNG", "L", enlarged(size))
    models = output_paths(view, "model")
    assert list(models) == ["generator.keras"]

    import keras

    generator = keras.saving.load_model(models["generator.keras"])
    assert [tuple(i.shape) for i in generator.inputs] == [(None, CGAN["latent_dim"]), (None, 10)]

    metrics = events_of(embedded_stack, view.id, "metrics")
    assert [m["epoch"] for m in metrics] == list(range(1, epochs + 1))
    # The discriminator learns to tell the early generator's images apart.
    assert metrics[-1]["d_loss"] < metrics[0]["d_loss"], metrics
    assert all(m["g_loss"] > 0 for m in metrics)
