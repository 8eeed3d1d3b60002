"""The deepdream kind: spec checks, the ascent step against the reference computation,
octaves, the backbone's layer table and max_loss in process (LocalContext), and bad input
refused at submit through a real stack. Resume, crash, warm cache, non-finite loss, a
worker killed mid-job, imports and bad specs: tests/test_kind_contract.py and
tests/test_kill_resume.py (the case "deepdream" of tests/fixtures/kind_cases.py)."""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from PIL import Image

from kinds import backbones
from kinds.deepdream import DEFAULT_LAYERS, DEFAULT_QUEUE, INPUT_FILES, Spec, run
from tests.fixtures.data import make_bad_images, make_picture
from tests.fixtures.jobs import assert_refused_at_submit
from tests.fixtures.kind_cases import CASES, KindRuns, output_files
from tests.fixtures.local_context import DictCache, LocalContext
from tests.fixtures.stacks import Stack

CASE = CASES["deepdream"]
HEIGHT, WIDTH = 130, 140  # tests.fixtures.data.make_picture's
SHAPES = [(108, 116), (130, 140)]  # 2 octaves at scale 1.2: int(side / 1.2), then full size
STEPS = 4


@pytest.fixture(scope="module")
def picture(kind_runs: KindRuns) -> str:
    return str(kind_runs.inputs.picture)


def tiny(picture: str, **changes: Any) -> Spec:
    return Spec(**{**CASE.values, "image": picture, **changes})


@pytest.fixture(scope="module")
def reference(kind_runs: KindRuns) -> LocalContext:
    """An uninterrupted cold run of the tiny spec (shared with the contract tests); its
    cache serves the later tests."""
    return kind_runs.reference(CASE)


def dream_model(cache: DictCache) -> Any:
    from kinds.deepdream.dream import DreamModel

    [model] = [entry for entry in cache.entries.values() if isinstance(entry, DreamModel)]
    return model


# --- spec -----------------------------------------------------------------------------


def test_defaults_follow_the_reference(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.new("RGB", (320, 240)).save(path)  # the default octaves need 210 pixels or more
    spec = Spec(image=str(path))
    assert (DEFAULT_QUEUE, INPUT_FILES) == ("gpu", ("image",))
    assert spec.layers == {"mixed4": 1.0, "mixed5": 1.5, "mixed6": 2.0, "mixed7": 2.5}
    assert spec.layers == DEFAULT_LAYERS
    assert (spec.octaves, spec.octave_scale, spec.steps) == (3, 1.4, 30)
    assert (spec.step_size, spec.max_loss, spec.backbone_weights) == (20.0, 15.0, "imagenet")
    assert spec.checkpoint_every == 10  # a checkpoint is one image: cheap


def test_octave_shapes_follow_the_reference(tmp_path: Path) -> None:
    path = tmp_path / "large.png"
    Image.new("RGB", (600, 400)).save(path)
    spec = Spec(image=str(path))
    expected = [(int(400 / 1.4**i), int(600 / 1.4**i)) for i in (2, 1)] + [(400, 600)]
    assert spec.octave_shapes == expected == [(204, 306), (285, 428), (400, 600)]


def test_small_image_error_is_one_line_and_names_the_octave(tmp_path: Path) -> None:
    path = make_picture(tmp_path / "small.png", 80, 88)
    with pytest.raises(pydantic.ValidationError) as error:
        Spec(image=str(path))
    [problem] = error.value.errors()
    assert problem["msg"] == (
        "Value error, image 88x80 is too small for layer 'mixed4': its first octave (44x40) "
        "gives 1x0 activations, nothing inside their 2-pixel border; use a larger image, "
        "fewer octaves or an earlier layer"
    )
    assert Spec(image=str(path), layers={"mixed1": 1.0}, octaves=1).octave_shapes == [(80, 88)]


def test_bad_image_files_are_refused(picture: str, tmp_path: Path) -> None:
    for path, message in make_bad_images(tmp_path).values():
        with pytest.raises(pydantic.ValidationError, match=message):
            tiny(picture, image=str(path))
    wide = tmp_path / "wide.png"
    Image.new("1", (4100, 130)).save(wide)
    with pytest.raises(pydantic.ValidationError, match="over the 4096-pixel limit per side"):
        tiny(picture, image=str(wide))


def test_static_inception_table_matches_keras(reference: LocalContext) -> None:
    import keras

    extractor = next(
        entry
        for entry in reference.cache.entries.values()
        if isinstance(entry, backbones.FeatureExtractor)
    )
    model = extractor.backbone
    names = tuple(layer.name for layer in model.layers if layer.name.startswith("mixed"))
    assert names == backbones.INCEPTION_V3_LAYERS
    every = keras.Model(model.input, [model.get_layer(name).output for name in names])
    for height, width in ((75, 80), (108, 151)):
        activations = every(np.zeros((1, height, width, 3), np.float32))
        for name, activation in zip(names, activations, strict=True):
            expected = [backbones.inception_v3_feature_side(side, name) for side in (height, width)]
            assert list(activation.shape[1:3]) == expected, (name, height, width)


# --- the algorithm ---------------------------------------------------------------------


def test_run_writes_octaves_final_image_and_loss(reference: LocalContext) -> None:
    outputs = output_files(reference)
    assert sorted(outputs) == ["image/final.png", "snapshot/octave_1.png", "snapshot/octave_2.png"]
    sizes = {name: Image.open(io.BytesIO(data)).size for name, data in outputs.items()}
    assert sizes["snapshot/octave_1.png"] == (SHAPES[0][1], SHAPES[0][0])
    assert sizes["snapshot/octave_2.png"] == sizes["image/final.png"] == (WIDTH, HEIGHT)
    assert outputs["image/final.png"] == outputs["snapshot/octave_2.png"]
    assert [call.step for call in reference.progress_calls] == list(range(1, 2 * STEPS + 1))
    assert [call.metrics["octave"] for call in reference.progress_calls] == [1.0] * 4 + [2.0] * 4
    assert [(e.step, e.values["octave"], e.values["steps"]) for e in reference.metric_events] == [
        (STEPS, 1.0, STEPS),
        (2 * STEPS, 2.0, STEPS),
    ]


def test_loss_goes_up_in_every_octave(reference: LocalContext) -> None:
    for octave in (1.0, 2.0):
        values = [
            c.metrics["loss"] for c in reference.progress_calls if c.metrics["octave"] == octave
        ]
        assert all(math.isfinite(v) and v > 0 for v in values)
        assert all(later > earlier for earlier, later in itertools.pairwise(values))


def test_step_equals_the_reference_computation(reference: LocalContext, picture: str) -> None:
    """One ascent step of the kind against the reference's: a feature extractor with a
    dict of the layers' outputs, loss summed in the layer dict's order, eager."""
    import keras
    import tensorflow as tf

    from kinds.images import inception_preprocess, load_rgb

    model = dream_model(reference.cache)
    model.start_job(tiny(picture))  # the cache entry holds the reference spec's weights
    backbone = model.extractor.backbone
    extractor = keras.Model(
        backbone.input, {name: backbone.get_layer(name).output for name in DEFAULT_LAYERS}
    )
    image = tf.image.resize(inception_preprocess(load_rgb(picture))[np.newaxis], SHAPES[0])
    with tf.GradientTape() as tape:
        tape.watch(image)
        features = extractor(image)
        loss = tf.zeros(())
        for name, weight in DEFAULT_LAYERS.items():
            loss += weight * tf.reduce_mean(tf.square(features[name][:, 2:-2, 2:-2, :]))
    expected = image + 20.0 * tf.math.l2_normalize(tape.gradient(loss, image))

    fast_loss, stepped = model.step(image, tf.constant(20.0))
    assert math.isclose(float(fast_loss), float(loss), rel_tol=1e-4)
    np.testing.assert_allclose(stepped, expected, rtol=0, atol=1e-5)
    assert float(tf.norm(stepped - image)) == pytest.approx(20.0, rel=1e-4)


def test_model_built_after_other_models_gives_identical_bytes(
    picture: str, reference: LocalContext, tmp_path: Path
) -> None:
    """A worker that built other models first (other Keras layer names) must compute the
    same bits: a deterministic job resumed there ends as it would have anywhere."""
    import tensorflow as tf

    # Building `reference` advanced Keras' layer-name counters: unless the cache resets
    # them, this build's layers get other names (activation_94 for activation, ...).
    elsewhere = LocalContext(tmp_path, cache=DictCache())
    run(tiny(picture), elsewhere)
    assert output_files(elsewhere) == output_files(reference)
    # PNG bytes round away most of the difference; the ascent step shows every bit.
    image = tf.random.stateless_normal((1, *SHAPES[0], 3), seed=(0, 1))
    models = [dream_model(reference.cache), dream_model(elsewhere.cache)]
    for model in models:
        model.start_job(tiny(picture))
    here, there = (model.step(image, tf.constant(20.0))[1].numpy() for model in models)
    assert np.array_equal(here, there)


def test_max_loss_ends_each_octave_early(picture: str, reference: LocalContext, tmp_path: Path):
    ctx = LocalContext(tmp_path, cache=reference.cache)
    run(tiny(picture, max_loss=1e-12), ctx)
    # The step that crosses max_loss is kept, then the octave ends (as in the reference).
    assert [call.step for call in ctx.progress_calls] == [STEPS, 2 * STEPS]
    assert [event.values["steps"] for event in ctx.metric_events] == [1.0, 1.0]
    assert Image.open(ctx.outputs[("image", "final.png")]).size == (WIDTH, HEIGHT)


def test_bad_input_is_refused_at_submit(
    embedded_stack: Stack, picture: str, tmp_path: Path
) -> None:
    small = make_picture(tmp_path / "small.png", 80, 88)
    cases = {
        (f"image={picture}", 'layers={"x": 1}'): "unknown layer",
        (f"image={small}",): "too small for layer 'mixed4'",
    }
    assert_refused_at_submit(embedded_stack, "deepdream", cases)
