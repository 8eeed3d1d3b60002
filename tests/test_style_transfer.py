"""The style-transfer kind: spec checks, the fast path against the reference computation,
resume and warm cache in-process (LocalContext), then end to end through real workers."""

from __future__ import annotations

import io
import itertools
import math
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from PIL import Image, ImageDraw

from kinds.contract import JobError
from kinds.style_transfer import DEFAULT_QUEUE, INPUT_FILES, STYLE_LAYERS, Spec, run
from tests.conftest import Stack
from tests.fixtures.local_context import DictCache, LocalContext, SimulatedCrash, StopRequested

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras 3.15 calls np.array(tensor) in get_weights/save, which numpy 2.4 flags.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
REPO = Path(__file__).resolve().parent.parent

HEIGHT, WIDTH = 32, 45  # the 40x56 content image at height 32: round(56 * 32 / 40)
ITERATIONS = 6


def make_content(path: Path) -> Path:
    """A 56x40 picture: a gradient sky, a dark hill and a bright disc."""
    image = Image.new("RGB", (56, 40))
    draw = ImageDraw.Draw(image)
    for row in range(40):
        draw.line([(0, row), (55, row)], fill=(60 + 4 * row, 90 + 3 * row, 200 - 2 * row))
    draw.ellipse([6, 4, 22, 20], fill=(250, 220, 90))
    draw.polygon([(0, 39), (20, 18), (38, 30), (55, 22), (55, 39)], fill=(30, 80, 40))
    image.save(path)
    return path


def make_style(path: Path) -> Path:
    """A 48x48 pattern of coloured stripes (another size than the content)."""
    rows, columns = np.mgrid[0:48, 0:48]
    pixels = np.stack(
        [np.sin(columns / 2.0), np.sin((rows + columns) / 3.0), np.cos(rows / 4.0)], axis=-1
    )
    Image.fromarray(np.uint8((pixels + 1) * 127.5)).save(path)
    return path


def make_bad_images(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files to refuse at submit: name -> (path, part of the expected one-line error)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "notes.png"
    text.write_text("not a picture")
    good = io.BytesIO()
    Image.new("RGB", (20, 20), (10, 200, 30)).save(good, format="PNG")
    data = bytearray(good.getvalue())
    data[-20] ^= 0xFF  # inside the image data: the chunk checksum no longer matches
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(bytes(data))
    bomb = folder / "bomb.png"
    Image.new("1", (10_000, 10_000)).save(bomb)  # 100 megapixels in 12 kB
    large = folder / "large.png"
    Image.new("1", (7_000, 6_000)).save(large)  # 42 megapixels
    return {
        "text": (text, "not an image file Pillow can read"),
        "corrupt": (corrupt, "corrupt or unreadable image"),
        "bomb": (bomb, "decompression bomb"),
        "large": (large, "over the 40000000-pixel limit"),
    }


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("pictures")
    return {
        "content": str(make_content(folder / "content.png")),
        "style": str(make_style(folder / "style.png")),
    }


def tiny(pictures: dict[str, str], **changes: Any) -> Spec:
    values = dict(
        height=HEIGHT,
        iterations=ITERATIONS,
        snapshot_every=3,
        backbone_weights="none",
        deterministic=True,
        seed=2,
    )
    return Spec(**{**pictures, **values, **changes})


@pytest.fixture(scope="module")
def reference(pictures: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> LocalContext:
    """An uninterrupted cold run of the tiny spec. Its cache is then the warm cache of the
    tests that are not about cold starts."""
    ctx = LocalContext(tmp_path_factory.mktemp("reference"), cache=DictCache())
    run(tiny(pictures), ctx)
    return ctx


@pytest.fixture
def cache(reference: LocalContext) -> DictCache:
    return reference.cache


@pytest.fixture(scope="module")
def vgg19_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights file of a randomly initialised headless VGG19, as an air-gapped site
    would pre-stage a real one."""
    import keras

    path = tmp_path_factory.mktemp("weights") / "vgg19_random.weights.h5"
    keras.applications.VGG19(include_top=False, weights=None).save_weights(path)
    return path


def final_bytes(ctx: LocalContext) -> bytes:
    return (ctx.output_dir / "image" / "final.png").read_bytes()


def image_outputs(ctx: LocalContext) -> dict[str, bytes]:
    return {
        f"{path.parent.name}/{path.name}": path.read_bytes()
        for path in sorted(ctx.output_dir.glob("*/*.png"))
    }


def losses(ctx: LocalContext) -> list[float]:
    return [call.metrics["loss"] for call in ctx.progress_calls]


# --- spec -----------------------------------------------------------------------------


def test_defaults_follow_the_reference(pictures: dict[str, str]) -> None:
    spec = Spec(**pictures)
    assert (DEFAULT_QUEUE, INPUT_FILES) == ("gpu", ("content", "style"))
    assert (spec.content_weight, spec.style_weight, spec.total_variation_weight) == (
        2.5e-8,
        1e-6,
        1e-6,
    )
    assert (spec.optimizer, spec.learning_rate, spec.decay_steps, spec.decay_rate) == (
        "sgd",
        100.0,
        100,
        0.96,
    )
    assert (spec.iterations, spec.height, spec.snapshot_every) == (4000, 400, 100)
    assert spec.content_layer == "block5_conv2" and spec.style_layers == STYLE_LAYERS
    assert spec.style_layers == tuple(f"block{i}_conv1" for i in range(1, 6))
    assert spec.backbone_weights == "imagenet"
    assert spec.size == (400, 560)  # 56x40 at height 400
    assert Path(spec.content).is_absolute()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"height": 0}, "greater than 0"),
        ({"height": 8}, "its height must be from 16 to 4096"),
        ({"height": 4000}, "its width must be from 16 to 4096"),  # 5600 wide
        ({"iterations": 0}, "greater than 0"),
        ({"iterations": -5}, "greater than 0"),
        ({"snapshot_every": 0}, "greater than 0"),
        ({"checkpoint_every": 0}, "greater than 0"),
        ({"learning_rate": 0.0}, "greater than 0"),
        ({"style_weight": -1.0}, "greater than or equal to 0"),
        ({"decay_rate": 1.5}, "less than or equal to 1"),
        ({"optimizer": "adam"}, "'sgd' or 'lbfgs'"),
        ({"content_layer": "block6_conv1"}, "unknown content_layer 'block6_conv1' for vgg19"),
        ({"style_layers": ("block1_conv1", "conv2d_3")}, "unknown style layer 'conv2d_3'"),
        ({"style_layers": ()}, "at least 1 item"),
        ({"style_layers": ("block1_conv1", "block1_conv1")}, "lists a layer twice"),
        ({"backbone_weights": "weights.txt"}, "a Keras weights file"),
        ({"backbone_weights": "/no/such/vgg19.weights.h5"}, "does not exist"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_spec_rejects(pictures: dict[str, str], changes: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        tiny(pictures, **changes)


def test_bad_image_files_are_refused(pictures: dict[str, str], tmp_path: Path) -> None:
    for field in ("content", "style"):
        for path, message in make_bad_images(tmp_path).values():
            with pytest.raises(pydantic.ValidationError, match=message):
                tiny(pictures, **{field: str(path)})
    with pytest.raises(pydantic.ValidationError, match="cannot read the file"):
        tiny(pictures, content=str(tmp_path / "missing.png"))


def test_importing_the_kinds_does_not_load_tensorflow() -> None:
    code = (
        "import sys, kinds.style_transfer, kinds.deepdream, kinds.backbones\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not loaded, loaded"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_static_vgg19_layer_table_matches_keras(cache: DictCache) -> None:
    from kinds import backbones

    [extractor] = [e for e in cache.entries.values() if isinstance(e, backbones.FeatureExtractor)]
    names = tuple(layer.name for layer in extractor.backbone.layers[1:])
    assert names == backbones.VGG19_LAYERS


# --- pre- and de-processing ------------------------------------------------------------


def test_image_helpers_match_keras(pictures: dict[str, str]) -> None:
    import keras

    from kinds import images

    for size in (None, (HEIGHT, WIDTH)):
        expected = keras.utils.img_to_array(
            keras.utils.load_img(pictures["style"], target_size=size)
        )
        assert np.array_equal(images.load_rgb(pictures["style"], size), expected)
    rgb = images.load_rgb(pictures["content"])
    vgg = keras.applications.vgg19.preprocess_input(rgb[np.newaxis].copy())
    assert np.array_equal(images.vgg_preprocess(rgb)[np.newaxis], vgg)
    # De-processing truncates, as the reference does: a round trip may lose one level.
    assert np.abs(images.vgg_deprocess(vgg) - rgb).max() <= 1
    inception = keras.applications.inception_v3.preprocess_input(rgb[np.newaxis].copy())
    assert np.array_equal(images.inception_preprocess(rgb)[np.newaxis], inception)
    assert np.abs(images.inception_deprocess(inception) - rgb).max() <= 1
    assert images.scaled_width(56, 40, 400) == 560 and images.scaled_width(56, 40, 32) == WIDTH


# --- the algorithm ---------------------------------------------------------------------


def test_run_writes_snapshots_final_image_and_loss(reference: LocalContext) -> None:
    outputs = image_outputs(reference)
    assert sorted(outputs) == [
        "image/final.png",
        "snapshot/iteration_00003.png",
        "snapshot/iteration_00006.png",
    ]
    for data in outputs.values():
        picture = Image.open(io.BytesIO(data))
        assert (picture.format, picture.mode, picture.size) == ("PNG", "RGB", (WIDTH, HEIGHT))
    assert outputs["image/final.png"] == outputs["snapshot/iteration_00006.png"]
    assert outputs["snapshot/iteration_00003.png"] != outputs["snapshot/iteration_00006.png"]
    assert [call.step for call in reference.progress_calls] == list(range(1, ITERATIONS + 1))
    assert {call.total for call in reference.progress_calls} == {ITERATIONS}
    assert [event.step for event in reference.metric_events] == [3, 6]
    values = losses(reference)
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert all(later < earlier for earlier, later in itertools.pairwise(values))
    assert values[-1] < 0.9 * values[0]


def test_fast_path_equals_the_reference_computation(
    pictures: dict[str, str], vgg19_weights: Path, tmp_path: Path
) -> None:
    """Same weights file: the kind (targets computed once) against the reference's
    computation (three images through VGG19 at every step, Keras SGD + ExponentialDecay)."""
    import keras
    import tensorflow as tf

    from kinds.images import load_rgb, vgg_preprocess
    from kinds.style_transfer.reference import ReferenceStyleTransfer
    from kinds.style_transfer.render import StyleTransferModel

    spec = tiny(pictures, backbone_weights=str(vgg19_weights), iterations=4)
    cache = DictCache()
    ctx = LocalContext(tmp_path, cache=cache)
    run(spec, ctx)
    [model] = [e for e in cache.entries.values() if isinstance(e, StyleTransferModel)]

    backbone = keras.applications.VGG19(include_top=False, weights=str(vgg19_weights))
    content = vgg_preprocess(load_rgb(spec.content, spec.size))[np.newaxis]
    style = vgg_preprocess(load_rgb(spec.style, spec.size))[np.newaxis]
    reference = ReferenceStyleTransfer(backbone, HEIGHT, WIDTH, compiled=False)
    final, reference_losses = reference.run(content, style, 4)
    np.testing.assert_allclose(losses(ctx), reference_losses, rtol=1e-4)
    np.testing.assert_allclose(model.image.numpy(), final, rtol=0, atol=1e-2)

    # Each term alone, away from the content image (where the content term is zero).
    noise = np.random.default_rng(0).normal(0, 20, content.shape).astype(np.float32)
    image = tf.constant(content + noise)
    for weights in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)):
        model.loss_weights.assign([weights[0], weights[1] / len(STYLE_LAYERS), weights[2]])
        fast, fast_grads = model.loss_and_grads(image)
        reference.weights = weights
        slow, slow_grads = reference.loss_and_grads(tf.Variable(image), content, style)
        assert float(slow) > 0
        assert math.isclose(float(fast), float(slow), rel_tol=1e-4), (weights, fast, slow)
        scale = float(tf.reduce_max(tf.abs(slow_grads)))
        np.testing.assert_allclose(fast_grads, slow_grads, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("stop_at", [3, 4])  # at a snapshot, between snapshots
def test_stopped_and_resumed_run_gives_identical_bytes(
    pictures: dict[str, str],
    reference: LocalContext,
    cache: DictCache,
    tmp_path: Path,
    stop_at: int,
) -> None:
    first = LocalContext(tmp_path, cache=cache, stop_at=stop_at)
    with pytest.raises(StopRequested):
        run(tiny(pictures), first)
    assert first.saved_steps == [stop_at] and ("image", "final.png") not in first.outputs
    resumed = LocalContext(tmp_path, cache=cache)
    run(tiny(pictures), resumed)
    assert resumed.progress_calls[0].step == stop_at + 1
    assert losses(first) + losses(resumed) == losses(reference)
    assert image_outputs(resumed) == image_outputs(reference)


def test_crashed_run_resumes_from_its_last_checkpoint(
    pictures: dict[str, str], reference: LocalContext, cache: DictCache, tmp_path: Path
) -> None:
    crashed = LocalContext(tmp_path, cache=cache, checkpoint_every=2, crash_at=5)
    with pytest.raises(SimulatedCrash):
        run(tiny(pictures, checkpoint_every=2), crashed)
    assert crashed.saved_steps == [2, 4]
    resumed = LocalContext(tmp_path, cache=cache, checkpoint_every=2)
    run(tiny(pictures, checkpoint_every=2), resumed)
    assert [call.step for call in resumed.progress_calls] == [5, 6]
    assert final_bytes(resumed) == final_bytes(reference)


def test_warm_job_reuses_model_and_trace(
    pictures: dict[str, str], reference: LocalContext, tmp_path: Path
) -> None:
    """More jobs on the reference run's cache: one with other hyperparameters and seed,
    then the reference spec again, which must compute exactly what the cold run did."""
    from kinds import backbones
    from kinds.style_transfer.render import model_key

    cache = reference.cache
    other = tiny(pictures, seed=9, learning_rate=10.0, style_weight=1e-3, deterministic=False)
    run(other, LocalContext(tmp_path / "other", cache=cache))
    warm = LocalContext(tmp_path / "warm", cache=cache)
    run(tiny(pictures), warm)

    spec = tiny(pictures)
    extractor = cache.entries[
        backbones.cache_key(backbones.VGG19, spec.backbone_weights, spec.layers)
    ]
    key = model_key(spec, extractor)
    assert cache.builds[key] == 1 and set(cache.builds.values()) == {1}
    model = cache.entries[key]
    assert model.jobs >= 3
    counts = model.tracing_counts
    assert (counts["set_targets"], counts["sgd_step"]) == (1, 1)
    assert losses(warm) == losses(reference)
    assert image_outputs(warm) == image_outputs(reference)


def test_a_full_cache_drops_entries_and_rebuilds_them_exactly(
    pictures: dict[str, str], reference: LocalContext, tmp_path: Path
) -> None:
    """A worker whose cache holds one entry: each job rebuilds the backbone and the model
    (each build pushes the other out) and computes what the reference run did."""
    from worker.model_cache import ProcessModelCache

    cache = ProcessModelCache(max_entries=1)
    runs = [LocalContext(tmp_path / str(index), cache=cache) for index in range(2)]
    for ctx in runs:
        run(tiny(pictures), ctx)
    assert (sum(cache.builds.values()), cache.evictions, len(cache.keys())) == (4, 3, 1)
    for ctx in runs:
        assert image_outputs(ctx) == image_outputs(reference)


def test_lbfgs_lowers_the_loss_faster_and_resumes_exactly(
    pictures: dict[str, str], reference: LocalContext, cache: DictCache, tmp_path: Path
) -> None:
    spec = tiny(pictures, optimizer="lbfgs")
    whole = LocalContext(tmp_path / "whole", cache=cache)
    run(spec, whole)
    values = losses(whole)
    assert all(later < earlier for earlier, later in itertools.pairwise(values))
    assert values[-1] < 0.5 * losses(reference)[-1]  # SGD after as many iterations
    evaluations = [call.metrics["evaluations"] for call in whole.progress_calls]
    assert evaluations == sorted(evaluations) and evaluations[-1] >= ITERATIONS + 1

    first = LocalContext(tmp_path / "split", cache=cache, stop_at=4)
    with pytest.raises(StopRequested):
        run(spec, first)
    resumed = LocalContext(tmp_path / "split", cache=cache)
    run(spec, resumed)
    assert losses(first) + losses(resumed) == values
    assert image_outputs(resumed) == image_outputs(whole)


def test_lbfgs_minimises_a_quadratic() -> None:
    from kinds.style_transfer.lbfgs import Lbfgs, LbfgsState

    scales = np.linspace(1.0, 50.0, 40)

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        x64 = x.astype(np.float64)
        return float(0.5 * np.sum(scales * (x64 - 1) ** 2)), (scales * (x64 - 1)).astype(np.float32)

    optimizer = Lbfgs(objective, memory=5, initial_step=0.01)
    state = optimizer.start(np.zeros(40, np.float32))
    for _ in range(40):
        optimizer.iterate(state)
        if state.loss < 1e-8 or state.stalled:
            break
    assert state.loss < 1e-6 and len(state.s) == 5
    copy = LbfgsState.from_checkpoint(state.arrays(), state.meta())
    assert copy.arrays().keys() == state.arrays().keys()
    assert all(np.array_equal(copy.arrays()[k], state.arrays()[k]) for k in state.arrays())


def test_non_finite_loss_fails_the_job(pictures: dict[str, str], cache: DictCache, tmp_path: Path):
    with pytest.raises(JobError) as error:
        run(tiny(pictures, learning_rate=1e30), LocalContext(tmp_path, cache=cache))
    assert error.value.code == "nan_loss" and "\n" not in error.value.message
    assert "iteration 2" in error.value.message


def test_checkpoint_of_another_optimizer_is_refused(
    pictures: dict[str, str], cache: DictCache, tmp_path: Path
) -> None:
    with pytest.raises(StopRequested):
        run(tiny(pictures), LocalContext(tmp_path, cache=cache, stop_at=1))
    with pytest.raises(JobError) as error:
        run(tiny(pictures, optimizer="lbfgs"), LocalContext(tmp_path, cache=cache))
    assert error.value.code == "checkpoint_mismatch"


def test_imagenet_weights_offline_fail_at_once_naming_the_file(
    pictures: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a worker without internet and without the cached file sees (simulated, so the
    test means the same on a machine that has the file)."""
    from keras.src.utils import file_utils

    from kinds import backbones

    def offline(*args: Any, **kwargs: Any) -> str:
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -2]"
        )

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(JobError) as error:
        run(tiny(pictures, backbone_weights="imagenet"), LocalContext(tmp_path))
    message = error.value.message
    assert error.value.code == "weights_unavailable" and not error.value.retryable
    assert "backbone_weights='imagenet'" in message and "\n" not in message
    expected = backbones.keras_models_dir() / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert f"needs {expected.name} in {expected.parent}/" in message

    from keras.src.backend import config

    assert backbones.keras_models_dir() == Path(config.keras_home()) / "models"


# Keras warns about each VGG19 layer it finds no weights for, then the check refuses the file.
@pytest.mark.filterwarnings("ignore:Skipping nested container:UserWarning")
def test_weights_file_of_another_architecture_is_refused(pictures: dict[str, str], tmp_path: Path):
    import keras

    path = tmp_path / "small.weights.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save_weights(path)
    with pytest.raises(JobError) as error:
        run(tiny(pictures, backbone_weights=str(path)), LocalContext(tmp_path / "job"))
    assert error.value.code == "weights_invalid" and "\n" not in error.value.message


# --- end to end: real `atelier up`, Celery workers, SQLite, embedded Redis ------------


def decoded(path: str) -> Image.Image:
    picture = Image.open(path)
    picture.load()
    return picture


def test_end_to_end_outputs_and_warm_worker_cache(
    embedded_stack: Stack, pictures: dict[str, str]
) -> None:
    """Jobs of one shape in a row until one lands on a worker process that already ran
    one (the third at the latest, with two processes): that one builds nothing."""
    spec = {
        **pictures,
        "height": HEIGHT,
        "iterations": 2,
        "snapshot_every": 1,
        "backbone_weights": "none",
    }
    seen: set[int] = set()
    warm = 0
    for seed in range(3):
        job_id = embedded_stack.client.submit("style-transfer", {**spec, "seed": seed})
        view = embedded_stack.wait(job_id, timeout=120)
        assert view.status == "succeeded", view.error_message
        images = {o.name: o for o in view.outputs if o.role in ("snapshot", "image")}
        assert sorted(images) == ["final.png", "iteration_00001.png", "iteration_00002.png"]
        for output in images.values():
            assert output.path.startswith(str(embedded_stack.settings.outputs_dir / job_id))
            assert decoded(output.path).size == (WIDTH, HEIGHT)
        events = embedded_stack.client.events(job_id)
        metric_losses = [e["loss"] for e in events if e["type"] == "metrics"]
        assert len(metric_losses) == 2 and metric_losses[1] < metric_losses[0]
        [cache_use] = [e for e in events if e["type"] == "model_cache"]
        if cache_use["pid"] in seen:
            assert (cache_use["builds"], cache_use["hits"]) == (0, 2), cache_use
            warm += 1
            break
        seen.add(cache_use["pid"])
    assert warm == 1


def test_killed_worker_resumes_and_gives_the_uninterrupted_bytes(
    embedded_stack: Stack, pictures: dict[str, str], reference: LocalContext, tmp_path: Path
) -> None:
    values = {
        **pictures,
        "height": HEIGHT,
        "iterations": 24,
        "snapshot_every": 12,
        "checkpoint_every": 4,
        "backbone_weights": "none",
        "deterministic": True,
    }
    job_id = embedded_stack.client.submit("style-transfer", values)

    def reached_step_8() -> bool:
        view = embedded_stack.client.get(job_id)
        return view.status == "running" and (view.step or 0) >= 8

    embedded_stack.wait_for(reached_step_8, timeout=90, what="the job to reach step 8")
    running = embedded_stack.client.get(job_id)
    os.kill(running.worker_pid, signal.SIGKILL)
    view = embedded_stack.wait(job_id, timeout=120)
    assert view.status == "succeeded", view.error_message
    assert view.attempts == 2 and view.resumed_from_step is not None
    assert view.resumed_from_step >= 8 and view.resumed_from_step % 4 == 0
    [final] = [o for o in view.outputs if o.role == "image"]
    assert decoded(final.path).size == (WIDTH, HEIGHT)

    uninterrupted = LocalContext(tmp_path, cache=reference.cache)
    run(Spec(**values), uninterrupted)
    assert Path(final.path).read_bytes() == final_bytes(uninterrupted)


def test_bad_input_is_refused_at_submit(
    embedded_stack: Stack, pictures: dict[str, str], tmp_path: Path
) -> None:
    before = len(embedded_stack.client.list(limit=1000))
    bad = make_bad_images(tmp_path)
    style = f"style={pictures['style']}"
    content = f"content={pictures['content']}"
    kind = "style-transfer"
    cases = [
        ([kind, "--set", f"content={bad['text'][0]}", "--set", style], bad["text"][1]),
        ([kind, "--set", content, "--set", f"style={bad['bomb'][0]}"], bad["bomb"][1]),
        (
            [kind, "--set", content, "--set", style, "--set", 'style_layers=["block9_conv1"]'],
            "block9",
        ),
    ]
    with ThreadPoolExecutor() as pool:  # one CLI process per case, side by side
        results = list(pool.map(lambda c: embedded_stack.cli("submit", *c[0]), cases))
    for (args, expected), result in zip(cases, results, strict=True):
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert len(embedded_stack.client.list(limit=1000)) == before
