"""The deepdream kind: spec checks, the ascent step against the reference computation,
octaves, resume and warm cache in-process (LocalContext), then end to end through a real
worker that is killed mid-job."""

from __future__ import annotations

import io
import itertools
import math
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from PIL import Image

from kinds import backbones
from kinds.contract import JobError
from kinds.deepdream import DEFAULT_LAYERS, DEFAULT_QUEUE, INPUT_FILES, Spec, run
from tests.conftest import Stack
from tests.fixtures.local_context import DictCache, LocalContext, SimulatedCrash, StopRequested
from tests.test_style_transfer import make_bad_images

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

HEIGHT, WIDTH = 130, 140
SHAPES = [(108, 116), (130, 140)]  # 2 octaves at scale 1.2: int(side / 1.2), then full size
STEPS = 4


def make_picture(path: Path, height: int = HEIGHT, width: int = WIDTH) -> Path:
    rows, columns = np.mgrid[0:height, 0:width]
    waves = [np.sin(columns / 7.0), np.cos(rows / 5.0), np.sin((rows + columns) / 9.0)]
    noise = np.random.default_rng(0).normal(0, 12, (height, width, 3))
    pixels = np.clip(np.stack(waves, axis=-1) * 90 + 128 + noise, 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_picture(tmp_path_factory.mktemp("picture") / "coast.png"))


def tiny(picture: str, **changes: Any) -> Spec:
    values = dict(
        image=picture,
        octaves=2,
        octave_scale=1.2,
        steps=STEPS,
        max_loss=None,  # random weights give losses far below the reference's 15
        backbone_weights="none",
        deterministic=True,
        seed=4,
    )
    return Spec(**{**values, **changes})


@pytest.fixture(scope="module")
def reference(picture: str, tmp_path_factory: pytest.TempPathFactory) -> LocalContext:
    """An uninterrupted cold run of the tiny spec; its cache serves the later tests."""
    ctx = LocalContext(tmp_path_factory.mktemp("reference"), cache=DictCache())
    run(tiny(picture), ctx)
    return ctx


def image_outputs(ctx: LocalContext) -> dict[str, bytes]:
    return {
        f"{path.parent.name}/{path.name}": path.read_bytes()
        for path in sorted(ctx.output_dir.glob("*/*.png"))
    }


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


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"layers": {"mixed42": 1.0}}, "unknown layer 'mixed42' for inception_v3"),
        ({"layers": {"conv2d_5": 1.0}}, "usable: mixed0, mixed1"),  # process-dependent name
        ({"layers": {}}, "at least 1 item"),
        ({"layers": {"mixed4": math.nan}}, "not a finite number"),
        ({"octaves": 0}, "greater than 0"),
        ({"steps": 0}, "greater than 0"),
        ({"steps": -3}, "greater than 0"),
        ({"step_size": 0.0}, "greater than 0"),
        ({"octave_scale": 0.5}, "greater than or equal to 1"),
        ({"checkpoint_every": 0}, "greater than 0"),
        ({"octaves": 3}, "too small for layer 'mixed4'"),  # 130 / 1.2**2 = 90 px: too small
        ({"backbone_weights": "inception.bin"}, "a Keras weights file"),
    ],
)
def test_spec_rejects(picture: str, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        tiny(picture, **changes)


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
    outputs = image_outputs(reference)
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


@pytest.mark.parametrize("stop_at", [2, 4])  # inside octave 1, at its end (crash test: octave 2)
def test_stopped_and_resumed_run_gives_identical_bytes(
    picture: str, reference: LocalContext, tmp_path: Path, stop_at: int
) -> None:
    first = LocalContext(tmp_path, cache=reference.cache, stop_at=stop_at)
    with pytest.raises(StopRequested):
        run(tiny(picture), first)
    assert first.saved_steps == [stop_at]
    resumed = LocalContext(tmp_path, cache=reference.cache)
    run(tiny(picture), resumed)
    assert resumed.progress_calls[0].step == stop_at + 1
    assert first.progress_calls + resumed.progress_calls == reference.progress_calls
    assert image_outputs(resumed) == image_outputs(reference)


def test_crashed_run_resumes_from_its_last_checkpoint(
    picture: str, reference: LocalContext, tmp_path: Path
) -> None:
    crashed = LocalContext(tmp_path, cache=reference.cache, checkpoint_every=3, crash_at=7)
    with pytest.raises(SimulatedCrash):
        run(tiny(picture), crashed)
    assert crashed.saved_steps == [3, 6]
    resumed = LocalContext(tmp_path, cache=reference.cache, checkpoint_every=3)
    run(tiny(picture), resumed)
    assert [call.step for call in resumed.progress_calls] == [7, 8]
    assert image_outputs(resumed) == image_outputs(reference)


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
    assert image_outputs(elsewhere) == image_outputs(reference)
    # PNG bytes round away most of the difference; the ascent step shows every bit.
    image = tf.random.stateless_normal((1, *SHAPES[0], 3), seed=(0, 1))
    models = [dream_model(reference.cache), dream_model(elsewhere.cache)]
    for model in models:
        model.start_job(tiny(picture))
    here, there = (model.step(image, tf.constant(20.0))[1].numpy() for model in models)
    assert np.array_equal(here, there)


def test_warm_jobs_of_other_sizes_reuse_model_and_trace(
    picture: str, reference: LocalContext, tmp_path: Path
) -> None:
    larger = str(make_picture(tmp_path / "larger.png", 150, 170))
    other = tiny(
        picture, image=larger, seed=1, step_size=5.0, layers={**DEFAULT_LAYERS, "mixed4": 3.0}
    )
    run(other, LocalContext(tmp_path / "other", cache=reference.cache))
    warm = LocalContext(tmp_path / "warm", cache=reference.cache)
    run(tiny(picture), warm)

    assert set(reference.cache.builds.values()) == {1} and len(reference.cache.entries) == 2
    model = dream_model(reference.cache)
    assert model.tracing_count == 1  # one trace for every octave and image size
    assert model.jobs >= 3
    assert warm.progress_calls == reference.progress_calls
    assert image_outputs(warm) == image_outputs(reference)


def test_max_loss_ends_each_octave_early(picture: str, reference: LocalContext, tmp_path: Path):
    ctx = LocalContext(tmp_path, cache=reference.cache)
    run(tiny(picture, max_loss=1e-12), ctx)
    # The step that crosses max_loss is kept, then the octave ends (as in the reference).
    assert [call.step for call in ctx.progress_calls] == [STEPS, 2 * STEPS]
    assert [event.values["steps"] for event in ctx.metric_events] == [1.0, 1.0]
    assert Image.open(ctx.outputs[("image", "final.png")]).size == (WIDTH, HEIGHT)


def test_non_finite_loss_fails_the_job(picture: str, reference: LocalContext, tmp_path: Path):
    with pytest.raises(JobError) as error:
        run(tiny(picture, step_size=1e30), LocalContext(tmp_path, cache=reference.cache))
    assert error.value.code == "nan_loss" and "\n" not in error.value.message
    assert "octave 1, step 2" in error.value.message


# --- end to end: real `atelier up`, Celery workers, SQLite, embedded Redis ------------


def test_killed_worker_resumes_and_gives_the_uninterrupted_bytes(
    embedded_stack: Stack, picture: str, reference: LocalContext, tmp_path: Path
) -> None:
    values = {
        "image": picture,
        "octaves": 2,
        "octave_scale": 1.2,
        "steps": 20,
        "max_loss": None,
        "backbone_weights": "none",
        "deterministic": True,
        "checkpoint_every": 4,
    }
    job_id = embedded_stack.client.submit("deepdream", values)

    def reached_step_8() -> bool:
        view = embedded_stack.client.get(job_id)
        return view.status == "running" and (view.step or 0) >= 8

    embedded_stack.wait_for(reached_step_8, timeout=90, what="the job to reach step 8")
    os.kill(embedded_stack.client.get(job_id).worker_pid, signal.SIGKILL)
    view = embedded_stack.wait(job_id, timeout=120)
    assert view.status == "succeeded", view.error_message
    assert view.attempts == 2 and view.resumed_from_step is not None
    assert view.resumed_from_step >= 8 and view.resumed_from_step % 4 == 0

    outputs = {o.name: o for o in view.outputs if o.role in ("snapshot", "image")}
    assert sorted(outputs) == ["final.png", "octave_1.png", "octave_2.png"]
    sizes = {name: Image.open(output.path).size for name, output in outputs.items()}
    assert sizes == {
        "octave_1.png": (SHAPES[0][1], SHAPES[0][0]),
        "octave_2.png": (WIDTH, HEIGHT),
        "final.png": (WIDTH, HEIGHT),
    }
    events = embedded_stack.client.events(job_id)
    octave_losses = [e["loss"] for e in events if e["type"] == "metrics"]
    assert len(octave_losses) == 2 and all(loss > 0 for loss in octave_losses)

    uninterrupted = LocalContext(tmp_path, cache=reference.cache)
    run(Spec(**values), uninterrupted)
    for name, output in outputs.items():
        role = "image" if name == "final.png" else "snapshot"
        assert Path(output.path).read_bytes() == uninterrupted.outputs[(role, name)].read_bytes()


def test_bad_input_is_refused_at_submit(
    embedded_stack: Stack, picture: str, tmp_path: Path
) -> None:
    before = len(embedded_stack.client.list(limit=1000))
    small = make_picture(tmp_path / "small.png", 80, 88)
    cases = [
        (["deepdream", "--set", f"image={picture}", "--set", 'layers={"x": 1}'], "unknown layer"),
        (["deepdream", "--set", f"image={small}"], "too small for layer 'mixed4'"),
    ]
    with ThreadPoolExecutor() as pool:  # one CLI process per case, side by side
        results = list(pool.map(lambda c: embedded_stack.cli("submit", *c[0]), cases))
    for (args, expected), result in zip(cases, results, strict=True):
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert len(embedded_stack.client.list(limit=1000)) == before
