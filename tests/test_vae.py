"""The vae kind: spec, exact resume in-process, and through real workers (outputs, loss,
SIGKILL mid-training with identical bytes)."""

from __future__ import annotations

import hashlib
import io
import math
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest
from PIL import Image

from kinds.contract import JobError
from kinds.vae import DEFAULT_QUEUE, Spec, run
from scheduler.client import JobView
from tests.conftest import Stack
from tests.fixtures.local_context import DictCache, LocalContext, SimulatedCrash, StopRequested
from tests.fixtures.trained import VAE, training_jobs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keras 3.15 calls np.array(tensor) in get_weights/save, which numpy 2.4 flags.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TINY: dict[str, Any] = dict(
    dataset="glyphs",
    image_size=16,
    batch_size=16,
    dataset_size=64,
    epochs=2,
    grid_size=4,
    deterministic=True,
    seed=3,
)
TOTAL_STEPS = 8  # 64 images / 16 per batch, 2 epochs
METRICS = ("total_loss", "reconstruction_loss", "kl_loss")


def tiny(**changes: Any) -> Spec:
    return Spec(**{**TINY, **changes})


def grids(ctx: LocalContext) -> dict[str, bytes]:
    folder = ctx.output_dir / "sample"
    return {path.name: path.read_bytes() for path in sorted(folder.glob("epoch_*.png"))}


def weights(path: Path) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(path).get_weights()


def assert_same_models(mine: dict[str, Path], theirs: dict[str, Path]) -> None:
    assert sorted(mine) == sorted(theirs) == ["decoder.keras", "encoder.keras"]
    for name in mine:
        for a, b in zip(weights(mine[name]), weights(theirs[name]), strict=True):
            assert np.array_equal(a, b), name
        assert mine[name].read_bytes() == theirs[name].read_bytes(), name  # no timestamps


def local_models(ctx: LocalContext) -> dict[str, Path]:
    return {name: path for (role, name), path in ctx.outputs.items() if role == "model"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> LocalContext:
    """An uninterrupted in-process run of the tiny spec."""
    ctx = LocalContext(tmp_path_factory.mktemp("vae-reference"))
    run(tiny(), ctx)
    return ctx


# --- spec -----------------------------------------------------------------------------


def test_defaults_follow_the_reference() -> None:
    spec = Spec()
    assert DEFAULT_QUEUE == "gpu"
    assert (spec.dataset, spec.image_size, spec.latent_dim, spec.batch_size) == (
        "glyphs",
        28,
        2,
        128,
    )
    assert (spec.epochs, spec.learning_rate, spec.grid_size, spec.grid_range) == (30, 1e-3, 30, 1)
    assert spec.channels == 1 and Spec(dataset="cifar10").channels == 3


@pytest.mark.parametrize(
    "changes",
    [
        {"latent_dim": 1},
        {"epochs": 0},
        {"batch_size": -1},
        {"grid_size": 0},
        {"grid_size": 65},
        {"grid_range": 0.0},
        {"learning_rate": 0.0},
        {"image_size": 30},
        {"dataset": "no-such-dataset"},
        {"dataset_size": 8},  # smaller than one batch
        {"latent_dim": "2"},
        {"beta": 1.0},
    ],
)
def test_spec_rejects(changes: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        tiny(**changes)


# --- in-process training ----------------------------------------------------------------


def test_run_records_metrics_grids_and_models(reference: LocalContext) -> None:
    assert [call.step for call in reference.progress_calls] == list(range(1, TOTAL_STEPS + 1))
    assert [(e.epoch, e.step) for e in reference.metric_events] == [(1, 4), (2, 8)]
    for event in reference.metric_events:
        values = event.values
        assert sorted(values) == sorted(METRICS)
        assert math.isclose(
            values["total_loss"], values["reconstruction_loss"] + values["kl_loss"], rel_tol=1e-5
        )
        assert values["reconstruction_loss"] > 0 and values["kl_loss"] >= 0
    for data in grids(reference).values():
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.mode, image.size) == ("PNG", "L", (4 * 16, 4 * 16))

    import keras

    encoder = keras.saving.load_model(reference.outputs[("model", "encoder.keras")])
    decoder = keras.saving.load_model(reference.outputs[("model", "decoder.keras")])
    z_mean, z_log_var = encoder(np.zeros((3, 16, 16, 1), np.float32))
    assert z_mean.shape == z_log_var.shape == (3, 2)
    assert decoder(np.zeros((3, 2), np.float32)).shape == (3, 16, 16, 1)


@pytest.mark.parametrize("stop_at", [5])  # in the middle of the second epoch
def test_stopped_and_resumed_run_is_identical(
    reference: LocalContext, tmp_path: Path, stop_at: int
) -> None:
    first = LocalContext(tmp_path, stop_at=stop_at)
    with pytest.raises(StopRequested):
        run(tiny(), first)
    assert first.saved_steps == [stop_at]
    resumed = LocalContext(tmp_path)  # a fresh cache, as in another worker process
    run(tiny(), resumed)
    assert resumed.progress_calls[0].step == stop_at + 1
    assert resumed.metric_events[-1] == reference.metric_events[-1]
    assert grids(resumed) == grids(reference)
    assert_same_models(local_models(resumed), local_models(reference))


def test_crashed_run_resumes_from_its_last_checkpoint(
    reference: LocalContext, tmp_path: Path
) -> None:
    crashed = LocalContext(tmp_path, checkpoint_every=3, crash_at=7)
    with pytest.raises(SimulatedCrash):
        run(tiny(checkpoint_every=3), crashed)
    assert crashed.saved_steps == [3, 6]
    resumed = LocalContext(tmp_path, checkpoint_every=3)
    run(tiny(checkpoint_every=3), resumed)
    assert [call.step for call in resumed.progress_calls] == [7, 8]
    assert grids(resumed) == grids(reference)
    assert_same_models(local_models(resumed), local_models(reference))


def test_warm_cache_is_reset_between_jobs(reference: LocalContext, tmp_path: Path) -> None:
    from kinds.vae import train

    cache = DictCache()
    run(
        tiny(seed=9, learning_rate=5e-3, deterministic=False),
        LocalContext(tmp_path / "a", cache=cache),
    )
    warm = LocalContext(tmp_path / "b", cache=cache)
    run(tiny(), warm)
    (key,) = cache.entries
    models = cache.entries[key]
    assert isinstance(models, train.VaeModels) and key == ("vae", 16, 1, 2, False)
    assert models.jobs == 2 and models.tracing_count == 1
    assert grids(warm) == grids(reference)


def test_non_finite_loss_fails_the_job(tmp_path: Path) -> None:
    with pytest.raises(JobError) as error:
        run(tiny(learning_rate=1e30), LocalContext(tmp_path))
    assert error.value.code == "nan_loss" and "\n" not in error.value.message


# --- through real workers ----------------------------------------------------------------


def outputs(view: JobView, role: str) -> dict[str, Path]:
    return {o.name: Path(o.path) for o in view.outputs if o.role == role}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(embedded_stack: Stack) -> JobView:
    view = embedded_stack.wait(training_jobs(embedded_stack)["vae"], timeout=240)
    assert view.status == "succeeded", view.error_message
    return view


def test_trains_with_grids_models_and_falling_loss(embedded_stack: Stack, trained: JobView) -> None:
    epochs = VAE["epochs"]
    assert (trained.step, trained.total_steps, trained.epoch) == (60, 60, epochs)
    side = VAE["grid_size"] * 28
    grid_files = outputs(trained, "sample")
    assert sorted(grid_files) == [f"epoch_{epoch:04d}.png" for epoch in range(1, epochs + 1)]
    for path in grid_files.values():
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "L", (side, side))
    assert sorted(outputs(trained, "model")) == ["decoder.keras", "encoder.keras"]

    metrics = [e for e in embedded_stack.client.events(trained.id) if e["type"] == "metrics"]
    assert [m["epoch"] for m in metrics] == list(range(1, epochs + 1))
    first, last = metrics[0], metrics[-1]
    assert last["total_loss"] < 0.8 * first["total_loss"], (first, last)
    assert last["reconstruction_loss"] < first["reconstruction_loss"]
    assert all(m["kl_loss"] >= 0 for m in metrics)


def test_sigkill_mid_training_resumes_with_identical_bytes(
    embedded_stack: Stack, trained: JobView
) -> None:
    stack = embedded_stack
    killed = stack.submit("vae", **VAE)

    def checkpointed() -> bool:
        view = stack.client.get(killed)
        return view.status == "running" and any(o.role == "checkpoint" for o in view.outputs)

    stack.wait_for(checkpointed, timeout=120, what=f"vae job {killed} to checkpoint")
    running = stack.client.get(killed)
    os.kill(running.worker_pid, signal.SIGKILL)

    resumed = stack.wait(killed, timeout=240)
    assert resumed.status == "succeeded", resumed.error_message
    assert resumed.attempts == 2
    assert resumed.resumed_from_step is not None and resumed.resumed_from_step % 5 == 0
    assert len([e for e in stack.client.events(killed) if e["type"] == "resumed"]) == 1
    assert len(outputs(resumed, "model")) == 2

    # The uninterrupted job of the same spec: the same grids, byte for byte, and weights.
    mine, theirs = outputs(resumed, "sample"), outputs(trained, "sample")
    assert sorted(mine) == sorted(theirs)
    assert {name: sha(path) for name, path in mine.items()} == {
        name: sha(path) for name, path in theirs.items()
    }
    assert_same_models(outputs(resumed, "model"), outputs(trained, "model"))
    metrics = [
        [e for e in stack.client.events(job) if e["type"] == "metrics"][-1]
        for job in (killed, trained.id)
    ]
    assert metrics[0]["total_loss"] == metrics[1]["total_loss"]
