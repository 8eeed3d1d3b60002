"""The image-to-image kinds: pix2pix and cyclegan train through a real worker on the
built-in data, and translate applies what they made; in process, their specs follow
the papers, their networks have the papers' shapes, and the pieces that make CycleGAN
resumable (image pools, the learning-rate schedule) and pix2pix's inference (batch
statistics, jitter) do what they say. Resume, crash, warm cache, non-finite loss, imports
and bad specs: tests/test_kind_contract.py (cases pix2pix, cyclegan, translate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kinds import cyclegan, pix2pix, translate
from kinds.image_pairs import PAPER, SLATE, render_inks, render_outlines
from scheduler.client import JobView
from tests.fixtures.data import enlarged
from tests.fixtures.jobs import events_of, finished, output_paths
from tests.fixtures.stacks import Stack

SIZE = 32
PIX2PIX: dict[str, Any] = dict(
    image_size=SIZE,
    filters=8,
    dataset_size=64,
    held_out=4,
    epochs=8,
    learning_rate=6e-4,  # 3x the paper's: its output beats its input within 8 short epochs
    seed=1,
    jitter=True,
)
CYCLEGAN: dict[str, Any] = dict(
    image_size=SIZE,
    filters=8,
    residual_blocks=2,
    dataset_size=48,
    held_out=4,
    epochs=3,
    pool_size=10,
    seed=1,
)
HELD_OUT_SEED = 77  # images no training job has seen


# --- specs and networks, in process ---------------------------------------------------------


def test_defaults_follow_the_papers() -> None:
    p2p, cycle = pix2pix.Spec(), cyclegan.Spec()
    for spec in (p2p, cycle):
        assert (spec.image_size, spec.batch_size, spec.epochs, spec.filters) == (256, 1, 200, 64)
        assert (spec.learning_rate, spec.beta_1, spec.jitter, spec.load_size) == (
            2e-4,
            0.5,
            True,
            286,
        )
        assert spec.channels == 3
    assert (p2p.dataset, p2p.l1_weight, p2p.direction) == ("glyph-outlines", 100.0, "AtoB")
    assert (cycle.dataset, cycle.cycle_weight, cycle.identity_weight) == ("glyph-inks", 10.0, 0.5)
    assert (cycle.pool_size, cycle.blocks, cyclegan.Spec(image_size=128).blocks) == (50, 9, 6)
    assert translate.MODEL_INPUTS == {"model": ("pix2pix", "cyclegan")}
    assert (pix2pix.DEFAULT_QUEUE, cyclegan.DEFAULT_QUEUE, translate.DEFAULT_QUEUE) == (
        "gpu",
        "gpu",
        "cpu",
    )


def test_translate_takes_one_image_or_a_list(tmp_path: Path) -> None:
    paths = write_images(tmp_path, render_outlines(2, SIZE)[0], SIZE)
    assert translate.Spec(model="abcd", images=paths[0]).images == [paths[0]]
    assert translate.Spec(model="abcd", images=paths).images == paths


def test_pix2pix_networks_have_the_papers_shapes() -> None:
    from keras import layers

    from kinds.pix2pix.model import build_discriminator, build_generator

    generator = build_generator(256)
    kinds = [type(layer) for layer in generator.layers]
    assert kinds.count(layers.Conv2D) == 8 and kinds.count(layers.Conv2DTranspose) == 8
    assert kinds.count(layers.Dropout) == 3 and kinds.count(layers.Concatenate) == 7
    assert generator.count_params() == 54_425_859  # the TensorFlow tutorial's U-Net
    assert generator.output_shape == (None, 256, 256, 3)
    assert build_discriminator(256).output_shape == (None, 30, 30, 1)  # 70x70 patches
    small = build_generator(64)  # six halvings reach 1x1
    assert [type(layer) for layer in small.layers].count(layers.Conv2D) == 6


def test_cyclegan_generator_has_the_papers_blocks() -> None:
    from keras import layers

    from kinds.cyclegan.model import build_discriminator, build_generator

    for size, blocks in ((256, 9), (128, 6)):
        generator = build_generator(size, blocks)
        assert [type(layer) for layer in generator.layers].count(layers.Add) == blocks
        assert generator.output_shape == (None, size, size, 3)
    norms = [layer for layer in generator.layers if isinstance(layer, layers.GroupNormalization)]
    assert norms and all(layer.groups == layer.gamma.shape[0] for layer in norms)  # instance
    assert build_discriminator(256).output_shape == (None, 30, 30, 1)


def test_image_pool_keeps_the_latest_and_swaps_half_of_the_time() -> None:
    import tensorflow as tf

    from kinds.cyclegan.train import ImagePool

    pool = ImagePool(capacity=3, size=2, name="test")
    shown_before: set[float] = set()
    swapped = 0
    for step in range(60):
        image = tf.fill((1, 2, 2, 3), float(step))
        shown = float(pool.query(image, tf.constant([5, step], tf.int64))[0, 0, 0, 0])
        if step < 3:
            assert shown == step  # filling: shown as it is
        else:
            assert shown == step or shown in shown_before  # itself, or an older one
            swapped += shown != step
        shown_before.add(float(step))
        kept = {float(value) for value in pool.images.numpy()[:, 0, 0, 0]}
        assert float(step) in kept or shown == step  # a swapped-out image enters the pool
    assert int(pool.count.numpy()) == 3
    assert 15 <= swapped <= 45, swapped  # about one half of 57
    pool.reset()
    assert int(pool.count.numpy()) == 0 and not pool.images.numpy().any()


def test_cyclegan_learning_rate_is_constant_then_falls_to_zero() -> None:
    from kinds.cyclegan.train import CycleGanModels

    spec = cyclegan.Spec(image_size=16, filters=2, residual_blocks=1, jitter=False)
    models = CycleGanModels(spec)
    models.configure(spec)
    models.schedule(epochs=4, steps=3)
    rates = [float(models._rate(np.int64(step))) for step in range(12)]
    assert rates[:6] == pytest.approx([2e-4] * 6)
    assert rates[6:] == pytest.approx([2e-4 * (12 - step) / 6 for step in range(6, 12)])


def test_jitter_crops_input_and_target_together() -> None:
    import tensorflow as tf

    from kinds.translation_nets import jitter

    rng = np.random.default_rng(3)
    source = rng.integers(0, 256, (16, 18, 18, 3), dtype=np.uint8)
    pairs = np.concatenate([source, 255 - source], axis=-1)
    cropped = jitter(tf.constant(pairs), 16, tf.constant([1, 2], tf.int64)).numpy()
    assert cropped.shape == (16, 16, 16, 6)
    assert (cropped[..., 3:] == 255 - cropped[..., :3]).all()
    again = jitter(tf.constant(pairs), 16, tf.constant([1, 2], tf.int64)).numpy()
    assert (again == cropped).all()  # drawn from the key alone

    def origin(index: int) -> tuple[int, int, bool]:
        """Where image `index` was cropped from, and whether it was mirrored."""
        for y in range(3):
            for x in range(3):
                window = source[index, y : y + 16, x : x + 16]
                for flip, candidate in ((False, window), (True, window[:, ::-1])):
                    if (candidate == cropped[index, ..., :3]).all():
                        return y, x, flip
        raise AssertionError(f"image {index} is no crop of its source")

    origins = {origin(index) for index in range(16)}
    assert len(origins) > 3 and {flip for _, _, flip in origins} == {False, True}


def test_inference_on_batch_statistics_leaves_the_training_state_alone() -> None:
    from kinds.pix2pix.model import build_generator
    from kinds.translation_nets import translate_each

    generator = build_generator(16, 4)
    before = [np.array(var.numpy()) for var in generator.non_trainable_variables]
    images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    first = translate_each(generator, images, training=True, seed=1)
    again = translate_each(generator, images, training=True, seed=1)
    other = translate_each(generator, images, training=True, seed=2)
    assert (first == again).all() and not np.allclose(first, other)  # dropout from the seed
    after = [np.array(var.numpy()) for var in generator.non_trainable_variables]
    assert all((b == a).all() for b, a in zip(before, after, strict=True))


# --- through a real worker -----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(embedded_stack: Stack) -> dict[str, JobView]:
    """A pix2pix and a cyclegan job on the built-in data, trained side by side."""
    ids = {
        "pix2pix": embedded_stack.submit("pix2pix", **PIX2PIX),
        "cyclegan": embedded_stack.submit("cyclegan", **CYCLEGAN),
    }
    return {kind: finished(embedded_stack, job, timeout=420) for kind, job in ids.items()}


def grid_size(rows: int, columns: int) -> tuple[int, int]:
    return enlarged((columns * (SIZE + 2) + 2, rows * (SIZE + 2) + 2))


def check_grids(view: JobView, epochs: int, rows: int) -> None:
    grids = output_paths(view, "sample")
    assert sorted(grids) == [f"epoch_{epoch:04d}.png" for epoch in range(1, epochs + 1)]
    for path in grids.values():
        with Image.open(path) as image:
            assert (image.mode, image.size) == ("RGB", grid_size(rows, 4))


def test_pix2pix_learns_to_fill_held_out_outlines(
    embedded_stack: Stack, trained: dict[str, JobView]
) -> None:
    view = trained["pix2pix"]
    check_grids(view, PIX2PIX["epochs"], rows=3)  # input | output | target
    metrics = events_of(embedded_stack, view.id, "metrics")
    assert [event["epoch"] for event in metrics] == list(range(1, PIX2PIX["epochs"] + 1))
    assert {"d_loss", "g_gan", "g_l1", "val_l1"} <= set(metrics[0])
    assert metrics[-1]["val_l1"] < 0.7 * metrics[0]["val_l1"], metrics
    assert metrics[-1]["g_l1"] < metrics[0]["g_l1"], metrics
    assert list(output_paths(view, "model")) == ["generator.keras"]


def test_cyclegan_trains_both_directions(
    embedded_stack: Stack, trained: dict[str, JobView]
) -> None:
    view = trained["cyclegan"]
    check_grids(view, CYCLEGAN["epochs"], rows=6)  # A | G(A) | F(G(A)) | B | F(B) | G(F(B))
    metrics = events_of(embedded_stack, view.id, "metrics")
    names = {"g_loss", "f_loss", "d_a_loss", "d_b_loss", "cycle_loss", "identity_loss"}
    assert names <= set(metrics[0])
    assert metrics[-1]["cycle_loss"] < metrics[0]["cycle_loss"], metrics
    assert sorted(output_paths(view, "model")) == ["generator_ab.keras", "generator_ba.keras"]


def write_images(folder: Path, images: np.ndarray, size: int) -> list[str]:
    """uint8 images saved as PNG files of `size` px (other than the model's: resized)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, pixels in enumerate(images):
        path = folder / f"held_out_{index}.png"
        Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR).save(path)
        paths.append(str(path))
    return paths


def translated(embedded_stack: Stack, **spec: Any) -> np.ndarray:
    view = finished(embedded_stack, embedded_stack.submit("translate", **spec), timeout=120)
    images = output_paths(view, "image")
    count = len(spec["images"])
    assert sorted(images) == [f"translated_{index:04d}.png" for index in range(count)]
    with Image.open(output_paths(view, "grid")["grid.png"]) as grid:  # input | output rows
        assert grid.size == grid_size(count, 2)
    return np.stack([np.asarray(Image.open(images[name]), np.float32) for name in sorted(images)])


def test_translate_fills_outlines_with_pix2pix(
    embedded_stack: Stack, trained: dict[str, JobView], tmp_path: Path
) -> None:
    outlines, filled = render_outlines(6, SIZE, seed=HELD_OUT_SEED)
    paths = write_images(tmp_path / "outlines", outlines, 48)
    made = translated(embedded_stack, model=trained["pix2pix"].id, images=paths)
    assert made.shape == (6, SIZE, SIZE, 3)
    target = filled.astype(np.float32)
    assert np.abs(made - target).mean() < 0.8 * np.abs(outlines - target).mean()


def test_translate_changes_the_domain_with_cyclegan(
    embedded_stack: Stack, trained: dict[str, JobView], tmp_path: Path
) -> None:
    side_a, side_b = render_inks(4, SIZE, seed=HELD_OUT_SEED)
    model = trained["cyclegan"].id

    def distances(images: np.ndarray) -> tuple[float, float]:
        """Distance of the images' median colour to domain A's and B's backgrounds."""
        median = np.median(images.reshape(-1, 3), axis=0)
        return tuple(float(np.linalg.norm(median - np.array(c))) for c in (SLATE, PAPER))

    to_b = translated(embedded_stack, model=model, images=write_images(tmp_path / "a", side_a, 32))
    slate, paper = distances(to_b)
    assert paper < slate, (slate, paper)
    to_a = translated(
        embedded_stack,
        model=model,
        images=write_images(tmp_path / "b", side_b, 32),
        direction="BtoA",
    )
    slate, paper = distances(to_a)
    assert slate < paper, (slate, paper)


def test_translate_refuses_what_it_cannot_apply(
    embedded_stack: Stack, trained: dict[str, JobView], tmp_path: Path
) -> None:
    from scheduler.specs import SpecError

    image = write_images(tmp_path / "one", render_outlines(1, SIZE)[0], SIZE)
    failed = embedded_stack.submit(
        "pix2pix", **{**PIX2PIX, "epochs": 1, "dataset_size": 8, "learning_rate": 1e38}
    )
    assert embedded_stack.wait(failed).status == "failed"
    p2p, cycle = trained["pix2pix"].id, trained["cyclegan"].id
    dcgan = embedded_stack.submit("dcgan", image_size=16, epochs=1, steps_per_epoch=1)
    cases = [
        ({"model": dcgan}, f"job {dcgan} is a dcgan job, expected pix2pix, cyclegan"),
        ({"model": failed}, f"field 'model': job {failed} failed"),
        ({"model": p2p, "direction": "BtoA"}, "direction applies to a cyclegan model"),
        ({"model": cycle, "images": [str(tmp_path)]}, "a directory, not an image file"),
    ]
    before = len(embedded_stack.client.list(limit=1000))
    for spec, expected in cases:
        with pytest.raises(SpecError) as error:
            embedded_stack.client.submit("translate", {"images": image, **spec})
        assert expected in str(error.value) and "\n" not in str(error.value), str(error.value)
    assert len(embedded_stack.client.list(limit=1000)) == before
