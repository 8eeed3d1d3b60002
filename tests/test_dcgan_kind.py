"""The dcgan kind in process through LocalContext: its spec, networks and state helpers,
and what its run writes. Resume, crash, warm cache, non-finite loss, imports and bad
specs: tests/test_kind_contract.py (the case "dcgan" of tests/fixtures/kind_cases.py)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kinds.contract import JobError
from kinds.dcgan import DEFAULT_QUEUE, Spec, run
from tests.fixtures.data import enlarged, write_image_folder
from tests.fixtures.kind_cases import CASES, KindRuns, output_files
from tests.fixtures.local_context import LocalContext, StopRequested

CASE = CASES["dcgan"]
TINY = CASE.values
TOTAL_STEPS = 6
GRID_SIZE = (3 * (28 + 2) + 2, 2 * (28 + 2) + 2)  # 6 samples: 2 rows of 3, 2-pixel padding


def tiny(**changes: Any) -> Spec:
    return Spec(**{**TINY, **changes})


@pytest.fixture(scope="module")
def reference(kind_runs: KindRuns) -> LocalContext:
    """An uninterrupted cold run of the tiny spec (shared with the contract tests)."""
    return kind_runs.reference(CASE)


# --- spec -----------------------------------------------------------------------------


def test_defaults_follow_the_reference() -> None:
    spec = Spec()
    assert DEFAULT_QUEUE == "gpu"
    assert (spec.dataset, spec.image_size, spec.epochs, spec.batch_size) == ("glyphs", 64, 100, 32)
    assert (spec.latent_dim, spec.learning_rate, spec.label_noise) == (128, 1e-4, 0.05)
    assert spec.channels == 1 and Spec(dataset="cifar10").channels == 3


def test_spec_resolves_relative_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_image_folder(tmp_path / "pictures", 1, (8, 8))
    monkeypatch.chdir(tmp_path)
    spec = tiny(dataset="pictures")
    assert spec.dataset == str(tmp_path.resolve() / "pictures") and spec.channels == 3


# --- models and state helpers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "channels", "plan"),
    [(16, 1, (4, 2)), (28, 1, (7, 2)), (32, 3, (8, 2)), (64, 3, (8, 3))],
)
def test_model_shapes(size: int, channels: int, plan: tuple[int, int]) -> None:
    from kinds.dcgan.model import build_discriminator, build_generator, upsampling_plan

    assert upsampling_plan(size) == plan
    generator = build_generator(size, channels, 8)
    discriminator = build_discriminator(size, channels)
    assert generator.output_shape == (None, size, size, channels)
    assert discriminator.output_shape == (None, 1)
    strided = [layer for layer in discriminator.layers if getattr(layer, "strides", None) == (2, 2)]
    assert len(strided) == plan[1]


def test_every_multiple_of_four_has_a_plan() -> None:
    from kinds.dcgan.model import upsampling_plan

    for size in range(16, 129, 4):
        start, stages = upsampling_plan(size)
        assert start * 2**stages == size and start >= 4 and 2 <= stages <= 4


def test_reinitialize_depends_only_on_the_seed() -> None:
    from kinds import keras_state
    from kinds.dcgan.model import build_discriminator

    first, second = build_discriminator(16, 1), build_discriminator(16, 1)
    keras_state.reinitialize(first, (4, 2))
    keras_state.reinitialize(second, (4, 2))
    a, b = keras_state.model_arrays("d", first), keras_state.model_arrays("d", second)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    keras_state.reinitialize(second, (5, 2))
    c = keras_state.model_arrays("d", second)
    kernel = "d.0000"
    assert not np.array_equal(a[kernel], c[kernel])
    assert np.count_nonzero(a["d.0001"]) == 0, "biases start at zero"
    seed_states = [v for v in first.variables if v.name == keras_state.SEED_STATE_NAME]
    assert len(seed_states) == 1 and int(seed_states[0].numpy()[1]) == 0


def test_state_round_trip_and_mismatch() -> None:
    import keras

    from kinds import keras_state
    from kinds.dcgan.model import build_discriminator

    model = build_discriminator(16, 1)
    optimizer = keras.optimizers.Adam(0.5)
    optimizer.build(model.trainable_variables)
    optimizer.iterations.assign(7)
    saved = {**keras_state.model_arrays("m", model), **keras_state.optimizer_arrays("o", optimizer)}

    other = build_discriminator(16, 1)
    fresh = keras.optimizers.Adam(0.1)
    keras_state.load_model_arrays("m", other, saved)
    keras_state.load_optimizer_arrays("o", fresh, saved, other.trainable_variables)
    restored = keras_state.model_arrays("m", other)
    assert all(np.array_equal(restored[key], saved[key]) for key in restored)
    assert int(fresh.iterations.numpy()) == 7 and math.isclose(float(fresh.learning_rate), 0.5)

    keras_state.reset_optimizer(fresh, 0.25)
    assert int(fresh.iterations.numpy()) == 0 and math.isclose(float(fresh.learning_rate), 0.25)
    assert all(not np.any(v.numpy()) for v in fresh.variables[2:])

    wrong = build_discriminator(32, 1)  # a larger final Dense kernel
    with pytest.raises(keras_state.StateMismatch, match=r"checkpoint array m\.\d+ is float32"):
        keras_state.load_model_arrays("m", wrong, saved)
    with pytest.raises(keras_state.StateMismatch, match="arrays for 'missing'"):
        keras_state.load_model_arrays("missing", other, saved)


# --- training ------------------------------------------------------------------------


def test_run_produces_grids_metrics_and_generator(reference: LocalContext) -> None:
    assert [call.step for call in reference.progress_calls] == list(range(1, TOTAL_STEPS + 1))
    assert {call.total for call in reference.progress_calls} == {TOTAL_STEPS}
    assert [call.epoch for call in reference.progress_calls] == [1, 1, 1, 2, 2, 2]
    assert [(e.epoch, e.step) for e in reference.metric_events] == [(1, 3), (2, 6)]
    for event in reference.metric_events:
        per_step = [c.metrics for c in reference.progress_calls if c.epoch == event.epoch]
        for name in ("d_loss", "g_loss"):
            assert math.isfinite(event.values[name]) and event.values[name] > 0
            assert math.isclose(event.values[name], np.mean([m[name] for m in per_step]))

    files = output_files(reference)
    assert sorted(files) == [
        "model/generator.keras",
        "sample/epoch_0001.png",
        "sample/epoch_0002.png",
    ]
    grids = {name.removeprefix("sample/"): data for name, data in files.items() if "sample" in name}
    for data in grids.values():
        grid = Image.open(io.BytesIO(data))
        assert grid.format == "PNG" and grid.mode == "L" and grid.size == enlarged(GRID_SIZE)
    assert grids["epoch_0001.png"] != grids["epoch_0002.png"]

    import keras

    generator = keras.models.load_model(reference.outputs[("model", "generator.keras")])
    assert generator.output_shape == (None, 28, 28, 1)
    from kinds.images import grid_png
    from kinds.seeds import Stream

    rng = np.random.default_rng([TINY["seed"], Stream.SAMPLES])
    latents = rng.standard_normal((6, 16), np.float32)

    assert grid_png(generator(latents, training=False).numpy()) == grids["epoch_0002.png"]


def test_checkpoint_of_another_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StopRequested):
        run(tiny(), LocalContext(tmp_path, stop_at=1))
    with pytest.raises(JobError) as error:
        run(tiny(latent_dim=8), LocalContext(tmp_path))
    assert error.value.code == "checkpoint_mismatch" and "'generator'" not in error.value.message
    assert "checkpoint array generator." in error.value.message


def test_image_directory_trains_in_colour(tmp_path: Path) -> None:
    images = write_image_folder(tmp_path / "images", 8, (20, 24))
    spec = tiny(dataset=str(images), image_size=16, batch_size=4, epochs=1, samples=4)
    ctx = LocalContext(tmp_path / "job")
    run(spec, ctx)
    grid = Image.open(ctx.output_dir / "sample" / "epoch_0001.png")
    assert grid.mode == "RGB" and grid.size == enlarged((2 * 18 + 2, 2 * 18 + 2))
    assert [call.step for call in ctx.progress_calls] == [1, 2]
