"""What the image training kinds (dcgan, vae, denoising-ae, cgan) share.

- `ImageTrainingSpec`: the dataset and schedule fields with their submit-time checks.
- `EpochLoop`: the epoch/step loop around a kind's compiled train step: data order per
  (seed, epoch), a random key per (seed, global step), progress and a NaN check after
  every step, per-epoch mean metrics, checkpoints at the context's step boundaries and
  the exact position to resume from.
- `save_models`: a kind's final models as outputs (kinds.reproducibility saves them).

Importing this module is light (numpy and pydantic): Keras and TensorFlow are imported
by the functions that need them, so kinds' spec modules can use it at submit time.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from kinds.contract import Checkpoint, CheckpointedSpec, JobContext, JobError
from kinds.datasets import dataset_channels, validate_dataset
from kinds.precision import MIXED_PRECISION_HELP
from kinds.reproducibility import save_model

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 128
SEED_MODULUS = 2**63  # stateless random keys are int64
DATA_ORDER = 4  # second seed component of the data order (the dcgan kind's numbering)


class ImageTrainingSpec(CheckpointedSpec):
    """Dataset and schedule of an image training kind; kinds override the defaults."""

    dataset: str = Field(
        "glyphs",
        description="glyphs, mnist, fashion_mnist, cifar10, or a directory of images "
        "(.png .jpg .jpeg .bmp .gif .webp, searched recursively)",
    )
    image_size: int = Field(
        28,
        description=f"side of the square images: a multiple of 4 from {MIN_IMAGE_SIZE} to "
        f"{MAX_IMAGE_SIZE} (e.g. 28, 32, 64)",
    )
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(128, gt=0)
    steps_per_epoch: int | None = Field(None, gt=0, description="cap on batches per epoch")
    dataset_size: int | None = Field(
        None,
        gt=0,
        description="cap on training images (glyphs: how many to render, 2048 by default)",
    )
    mixed_precision: bool = Field(False, description=MIXED_PRECISION_HELP)

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str) -> str:
        return validate_dataset(value)

    @field_validator("image_size")
    @classmethod
    def _check_image_size(cls, value: int) -> int:
        if value % 4 or not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be a multiple of 4 from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}"
            )
        return value

    @model_validator(mode="after")
    def _check_dataset_size(self) -> ImageTrainingSpec:
        if self.dataset_size is not None and self.dataset_size < self.batch_size:
            raise ValueError("dataset_size must be at least batch_size")
        return self

    @property
    def channels(self) -> int:
        """1 for glyphs, mnist and fashion_mnist; 3 for cifar10 and image directories."""
        return dataset_channels(self.dataset)


def steps_per_epoch(spec: ImageTrainingSpec, image_count: int) -> int:
    """Full batches per epoch (a last partial batch is dropped), capped by the spec."""
    steps = image_count // spec.batch_size
    if steps == 0:
        raise JobError(
            "dataset_too_small",
            f"dataset {spec.dataset!r} has {image_count} images, fewer than one batch "
            f"({spec.batch_size})",
        )
    return min(steps, spec.steps_per_epoch or steps)


def epoch_order(seed: int, epoch: int, image_count: int) -> np.ndarray:
    """The shuffled image indices of one epoch, a function of (seed, epoch) only."""
    rng = np.random.default_rng([seed, DATA_ORDER, epoch])
    return rng.permutation(image_count).astype(np.int32)


@dataclasses.dataclass
class Position:
    """Where training stands: `step` steps of `epoch` are done (epochs count from 1)."""

    epoch: int = 1
    step: int = 0
    global_step: int = 0
    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    """Per metric, the sum over the finished steps of this epoch."""


class EpochLoop:
    """Runs `train_step(indices, key) -> losses` over the epochs of `spec`.

    `indices` are the int32 image indices of one batch, `key` the int64 pair
    (seed, global step) for the step's stateless random ops; the step returns one
    float per name in `metrics`. After each epoch the means are recorded as a metrics
    event and `end_epoch(epoch, global_step)` runs (grids, previews). `state()` and
    `load_state(arrays)` give and take every array a checkpoint must hold (weights,
    optimizer slots, seed-generator states); the loop adds its position.

    Checkpoint metadata: epoch, step_in_epoch, global_step, `<metric>_sum` per metric,
    steps_per_epoch and dataset_images (a resume with other values is refused).
    """

    def __init__(
        self,
        spec: ImageTrainingSpec,
        ctx: JobContext,
        *,
        image_count: int,
        metrics: Sequence[str],
        train_step: Callable[[np.ndarray, np.ndarray], Sequence[float]],
        state: Callable[[], dict[str, np.ndarray]],
        load_state: Callable[[dict[str, np.ndarray]], None],
        end_epoch: Callable[[int, int], None],
        nan_hint: str = "try a lower learning_rate",
    ) -> None:
        self.spec, self.ctx = spec, ctx
        self.image_count = image_count
        self.metrics = tuple(metrics)
        self.train_step, self.state, self.load_state = train_step, state, load_state
        self.end_epoch = end_epoch
        self.nan_hint = nan_hint
        self.steps = steps_per_epoch(spec, image_count)
        self.total = spec.epochs * self.steps
        self.seed = spec.seed % SEED_MODULUS

    def run(self) -> int:
        """Train to the end (from the checkpoint, if any); returns the final global step."""
        position = self._resume()
        while position.epoch <= self.spec.epochs:
            order = epoch_order(self.spec.seed, position.epoch, self.image_count)
            while position.step < self.steps:
                self._step(position, order)
            position = Position(epoch=position.epoch + 1, global_step=position.global_step)
        return position.global_step

    def _step(self, position: Position, order: np.ndarray) -> None:
        batch = self.spec.batch_size
        indices = order[position.step * batch : (position.step + 1) * batch]
        key = np.array([self.seed, position.global_step], dtype=np.int64)
        values = dict(zip(self.metrics, self.train_step(indices, key), strict=True))
        if not all(math.isfinite(value) for value in values.values()):
            shown = ", ".join(f"{name}={value}" for name, value in values.items())
            raise JobError(
                "nan_loss",
                f"loss is not finite at epoch {position.epoch}, step {position.global_step + 1} "
                f"({shown}); {self.nan_hint}",
            )
        position.step += 1
        position.global_step += 1
        for name, value in values.items():
            position.sums[name] = position.sums.get(name, 0.0) + value
        self.ctx.progress(position.global_step, self.total, epoch=position.epoch, metrics=values)
        if position.step == self.steps:
            self._finish_epoch(position)
        self.ctx.boundary(position.global_step, self._snapshotter(position))

    def _finish_epoch(self, position: Position) -> None:
        means = {name: position.sums.get(name, 0.0) / self.steps for name in self.metrics}
        self.ctx.metrics(means, step=position.global_step, epoch=position.epoch)
        self.end_epoch(position.epoch, position.global_step)

    def _snapshotter(self, position: Position) -> functools.partial[Checkpoint]:
        # A finished epoch is saved as the start of the next one.
        if position.step == self.steps:
            position = Position(epoch=position.epoch + 1, global_step=position.global_step)
        frozen = dataclasses.replace(position, sums=dict(position.sums))
        return functools.partial(self._snapshot, frozen)

    def _snapshot(self, position: Position) -> Checkpoint:
        meta: dict[str, Any] = {
            "epoch": position.epoch,
            "step_in_epoch": position.step,
            "global_step": position.global_step,
            **{f"{name}_sum": position.sums.get(name, 0.0) for name in self.metrics},
            "steps_per_epoch": self.steps,
            "dataset_images": self.image_count,
        }
        return Checkpoint(step=position.global_step, arrays=self.state(), meta=meta)

    def _resume(self) -> Position:
        checkpoint = self.ctx.restore()
        if checkpoint is None:
            return Position()
        meta = checkpoint.meta
        saved = (meta.get("dataset_images"), meta.get("steps_per_epoch"))
        if saved != (self.image_count, self.steps):
            raise JobError(
                "checkpoint_mismatch",
                f"checkpoint was taken with {meta.get('dataset_images')} images and "
                f"{meta.get('steps_per_epoch')} steps per epoch, the dataset now gives "
                f"{self.image_count} and {self.steps}",
            )
        try:
            self.load_state(dict(checkpoint.arrays))
        except ValueError as exc:  # keras_state.StateMismatch
            raise JobError("checkpoint_mismatch", f"cannot resume: {exc}") from None
        return Position(
            epoch=int(meta["epoch"]),
            step=int(meta["step_in_epoch"]),
            global_step=int(meta["global_step"]),
            sums={name: float(meta.get(f"{name}_sum", 0.0)) for name in self.metrics},
        )


def save_models(ctx: JobContext, models: Mapping[str, Any], *, epoch: int, step: int) -> None:
    """Record each model as a "model" output `<name>.keras`."""
    for name, model in models.items():
        ctx.save_output(
            "model",
            f"{name}.keras",
            functools.partial(save_model, model),
            epoch=epoch,
            step=step,
        )
