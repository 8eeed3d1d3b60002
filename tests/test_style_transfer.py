"""The style-transfer kind: spec and input checks, the fast path against the reference
computation, L-BFGS, the cache's limits and weights files in process (LocalContext), then
end to end through real workers (outputs, a warm worker, bad input). Resume, crash, warm
cache, non-finite loss, a worker killed mid-job, imports and bad specs:
tests/test_kind_contract.py and tests/test_kill_resume.py (the case "style-transfer" of
tests/fixtures/kind_cases.py)."""

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

from kinds.contract import JobError
from kinds.style_transfer import DEFAULT_QUEUE, INPUT_FILES, STYLE_LAYERS, Spec, run
from tests.fixtures.data import make_bad_images
from tests.fixtures.jobs import assert_refused_at_submit
from tests.fixtures.kind_cases import CASES, KindRuns, output_files
from tests.fixtures.local_context import DictCache, LocalContext, StopRequested
from tests.fixtures.stacks import Stack

CASE = CASES["style-transfer"]
HEIGHT, WIDTH = 32, 45  # the 40x56 content image at height 32: round(56 * 32 / 40)
ITERATIONS = 6


@pytest.fixture(scope="module")
def pictures(kind_runs: KindRuns) -> dict[str, str]:
    return {"content": str(kind_runs.inputs.content), "style": str(kind_runs.inputs.style)}


def tiny(pictures: dict[str, str], **changes: Any) -> Spec:
    return Spec(**{**CASE.values, **pictures, **changes})


@pytest.fixture(scope="module")
def reference(kind_runs: KindRuns) -> LocalContext:
    """An uninterrupted cold run of the tiny spec (shared with the contract tests). Its
    cache is then the warm cache of the tests that are not about cold starts."""
    return kind_runs.reference(CASE)


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


def test_bad_image_files_are_refused(pictures: dict[str, str], tmp_path: Path) -> None:
    for field in ("content", "style"):
        for path, message in make_bad_images(tmp_path).values():
            with pytest.raises(pydantic.ValidationError, match=message):
                tiny(pictures, **{field: str(path)})
    with pytest.raises(pydantic.ValidationError, match="cannot read the file"):
        tiny(pictures, content=str(tmp_path / "missing.png"))


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
    outputs = output_files(reference)
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
        assert output_files(ctx) == output_files(reference)


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
    assert output_files(resumed) == output_files(whole)


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
            assert output.location.startswith(str(embedded_stack.settings.outputs_dir / job_id))
            assert decoded(output.location).size == (WIDTH, HEIGHT)
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


def test_bad_input_is_refused_at_submit(
    embedded_stack: Stack, pictures: dict[str, str], tmp_path: Path
) -> None:
    bad = make_bad_images(tmp_path)
    style, content = f"style={pictures['style']}", f"content={pictures['content']}"
    cases = {
        (f"content={bad['text'][0]}", style): bad["text"][1],
        (content, f"style={bad['bomb'][0]}"): bad["bomb"][1],
        (content, style, 'style_layers=["block9_conv1"]'): "block9",
    }
    assert_refused_at_submit(embedded_stack, "style-transfer", cases)
