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
from tests.fixtures.kind_cases import CASES, KindRuns, output_files, training_entries
from tests.fixtures.local_context import DictCache, LocalContext, StopRequested

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


def test_architecture_defaults_follow_their_texts() -> None:
    upsample, mlp = Spec(architecture="upsample"), Spec(architecture="mlp")
    assert (upsample.batch_size, upsample.latent_dim, upsample.learning_rate) == (128, 32, 4e-4)
    assert (upsample.label_noise, upsample.beta_1, upsample.epochs) == (0.0, 0.9, 100)
    assert (mlp.batch_size, mlp.epochs, mlp.latent_dim, mlp.learning_rate) == (512, 200, 128, 2e-4)
    assert (mlp.label_noise, mlp.beta_1) == (0.0, 0.9)
    assert (upsample.image_size, mlp.image_size) == (28, 28)  # both texts train on MNIST
    assert {spec.discriminator_steps for spec in (Spec(), upsample, mlp)} == {1}
    assert Spec().model_dump() == Spec(architecture="dcgan").model_dump()
    assert "upsample 128, mlp 512" in (Spec.model_fields["batch_size"].description or "")


def test_a_given_field_wins_over_the_architecture_default() -> None:
    given = '{"architecture": "mlp", "batch_size": 64, "label_noise": 0.1, "epochs": 3}'
    spec = Spec.model_validate_json(given)  # as submit and the worker read it
    assert (spec.batch_size, spec.label_noise, spec.epochs) == (64, 0.1, 3)
    assert (spec.latent_dim, spec.learning_rate) == (128, 2e-4)
    with pytest.raises(ValueError, match="dataset_size must be at least batch_size"):
        Spec(architecture="mlp", dataset_size=256)  # the default batch of 512 is checked too


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


def structure(model: Any) -> list[tuple[str, tuple[int | None, ...]]]:
    """Each layer's type and output shape (without the batch)."""
    return [(type(layer).__name__, tuple(layer.output.shape[1:])) for layer in model.layers]


def test_upsample_networks_follow_their_text() -> None:
    from kinds.dcgan.model import build_upsample_discriminator, build_upsample_generator

    generator = build_upsample_generator(28, 1, 32)
    assert structure(generator) == [
        ("Dense", (3136,)),
        ("BatchNormalization", (3136,)),
        ("LeakyReLU", (3136,)),
        ("Reshape", (7, 7, 64)),
        ("Dropout", (7, 7, 64)),
        ("UpSampling2D", (14, 14, 64)),
        ("Conv2DTranspose", (14, 14, 32)),
        ("BatchNormalization", (14, 14, 32)),
        ("LeakyReLU", (14, 14, 32)),
        ("UpSampling2D", (28, 28, 32)),
        ("Conv2DTranspose", (28, 28, 16)),
        ("BatchNormalization", (28, 28, 16)),
        ("LeakyReLU", (28, 28, 16)),
        ("Conv2D", (28, 28, 1)),
    ]
    layers = generator.layers
    norms = [layer for layer in layers if type(layer).__name__ == "BatchNormalization"]
    assert len(norms) == 3 and {norm.momentum for norm in norms} == {0.9}
    transposed = [layer for layer in layers if type(layer).__name__ == "Conv2DTranspose"]
    assert {(t.kernel_size, t.strides, t.activation.__name__) for t in transposed} == {
        ((5, 5), (1, 1), "linear")
    }
    assert (layers[-1].kernel_size, layers[-1].activation.__name__) == ((5, 5), "sigmoid")
    assert layers[4].rate == 0.4

    discriminator = build_upsample_discriminator(28, 1)
    assert structure(discriminator) == [
        ("Conv2D", (14, 14, 64)),
        ("Dropout", (14, 14, 64)),
        ("Conv2D", (7, 7, 128)),
        ("Dropout", (7, 7, 128)),
        ("Conv2D", (4, 4, 256)),
        ("Dropout", (4, 4, 256)),
        ("Flatten", (4096,)),
        ("Dense", (1,)),
    ]
    convolutions, dropouts = discriminator.layers[0:6:2], discriminator.layers[1:6:2]
    assert {(c.kernel_size, c.strides, c.activation.__name__) for c in convolutions} == {
        ((5, 5), (2, 2), "relu")
    }
    assert {d.rate for d in dropouts} == {0.4}
    assert discriminator.layers[-1].activation.__name__ == "sigmoid"
    assert build_upsample_generator(16, 3, 8).output_shape == (None, 16, 16, 3)  # from 4x4


def test_mlp_networks_follow_their_text() -> None:
    from kinds.dcgan.model import build_mlp_discriminator, build_mlp_generator

    generator = build_mlp_generator(28, 1, 128)
    assert structure(generator) == [
        ("Dense", (256,)),
        ("LeakyReLU", (256,)),
        ("Dense", (512,)),
        ("LeakyReLU", (512,)),
        ("Dense", (1024,)),
        ("LeakyReLU", (1024,)),
        ("Dense", (784,)),
        ("Rescaling", (784,)),
        ("Reshape", (28, 28, 1)),
    ]
    assert {layer.negative_slope for layer in generator.layers[1:6:2]} == {0.2}
    assert generator.layers[6].activation.__name__ == "tanh"
    extremes = generator.layers[7](np.array([[-1.0, 1.0]], np.float32)).numpy()
    assert extremes.tolist() == [[0.0, 1.0]], "tanh's range mapped to the [0, 1] of images"

    first = generator.layers[0]  # as PyTorch's nn.Linear: uniform in +-1/sqrt(fan_in)
    for weights in (first.kernel.numpy(), first.bias.numpy()):
        assert np.abs(weights).max() <= 128**-0.5 < 1.1 * np.abs(weights).max()

    discriminator = build_mlp_discriminator(28, 1)
    assert structure(discriminator) == [
        ("Flatten", (784,)),
        ("Rescaling", (784,)),  # to the text's [-1, 1]
        ("Dense", (1024,)),
        ("LeakyReLU", (1024,)),
        ("Dropout", (1024,)),
        ("Dense", (512,)),
        ("LeakyReLU", (512,)),
        ("Dropout", (512,)),
        ("Dense", (256,)),
        ("LeakyReLU", (256,)),
        ("Dropout", (256,)),
        ("Dense", (1,)),
    ]
    assert {layer.rate for layer in discriminator.layers[4:11:3]} == {0.3}
    assert discriminator.layers[1](np.array([[0.0, 1.0]], np.float32)).numpy().tolist() == [
        [-1.0, 1.0]
    ]
    assert discriminator.layers[-1].activation.__name__ == "sigmoid"


@pytest.mark.parametrize("architecture", ["dcgan", "upsample", "mlp"])
def test_outputs_stay_float32_under_mixed_precision(architecture: str) -> None:
    from kinds import precision
    from kinds.dcgan.model import NETWORKS

    build_generator, build_discriminator = NETWORKS[architecture]
    with precision.compute_policy(True):
        generator, discriminator = build_generator(16, 1, 8), build_discriminator(16, 1)
    assert generator.layers[0].compute_dtype == "float16"
    images = generator(np.zeros((2, 8), np.float32))
    assert images.dtype == "float32" and discriminator(images).dtype == "float32"


def test_reinitialize_resets_batch_normalization() -> None:
    from kinds import keras_state
    from kinds.dcgan.model import build_upsample_generator

    trained, fresh = build_upsample_generator(16, 1, 8), build_upsample_generator(16, 1, 8)
    for var in trained.variables:  # as after training: statistics, gamma and beta moved
        var.assign(np.full(var.shape, 3, np.dtype(var.dtype)))
    for model in (trained, fresh):
        keras_state.reinitialize(model, (4, 1))
    a, b = keras_state.model_arrays("g", trained), keras_state.model_arrays("g", fresh)
    assert all(np.array_equal(a[key], b[key]) for key in a)
    norms = [layer for layer in trained.layers if type(layer).__name__ == "BatchNormalization"]
    assert len(norms) == 3
    for norm in norms:
        assert np.all(norm.gamma.numpy() == 1) and not np.any(norm.beta.numpy())
        assert np.all(norm.moving_variance.numpy() == 1) and not np.any(norm.moving_mean.numpy())


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


# --- the other architectures ----------------------------------------------------------

VARIANTS = ("dcgan-upsample", "dcgan-mlp")


def test_each_step_updates_the_discriminator_k_times(kind_runs: KindRuns) -> None:
    trained = kind_runs.reference(CASES["dcgan-mlp"])  # discriminator_steps=2
    assert isinstance(trained.cache, DictCache)
    (key,) = training_entries(trained.cache)
    models = trained.cache.entries[key]
    updates = [int(o.iterations.numpy()) for o in models.optimizers.values()]
    assert updates == [TOTAL_STEPS, 2 * TOTAL_STEPS]  # generator, discriminator


class SamplingContext(LocalContext):
    """A LocalContext that finds one job's model outputs."""

    def __init__(self, root: Path, models: dict[str, Path]) -> None:
        super().__init__(root)
        self.models = models

    def outputs_of(self, job_id: str, role: str) -> dict[str, Path]:
        return self.models if role == "model" else {}


@pytest.mark.parametrize("name", VARIANTS)
def test_gan_sample_reads_the_generator(name: str, kind_runs: KindRuns, tmp_path: Path) -> None:
    from kinds import gan_sample

    trained = kind_runs.reference(CASES[name])
    model = trained.outputs[("model", "generator.keras")]
    ctx = SamplingContext(tmp_path, {"generator.keras": model})
    gan_sample.run(gan_sample.Spec(model="trained", count=3, interpolate=2), ctx)
    images = [ctx.outputs[("image", f"sample_{index:04d}.png")] for index in range(3)]
    for path in images:
        with Image.open(path) as image:
            assert (image.mode, image.size) == ("L", (28, 28))
    assert ("walk", "walk.gif") in ctx.outputs and ("grid", "grid.png") in ctx.outputs
