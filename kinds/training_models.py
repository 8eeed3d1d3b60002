"""The per-process cache entry of every training kind: its networks, their optimizers,
the checkpointed state and the traced train step, built once per process and shape.

A worker keeps the entry between jobs (worker/model_cache.py counts its builds), so the
next job of the same shape neither rebuilds nor retraces; `start_job` puts every
variable back to what a fresh build would hold for the new job's seed, so a warm job
computes exactly what a cold one does.

A kind subclasses `TrainingModels`, names its networks and optimizers, gives the step's
input signature, and writes `_train_step`. Imports TensorFlow: loaded by `run` only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from kinds import keras_state, precision
from kinds.contract import JobContext
from kinds.datasets import load_images, load_labelled_images
from kinds.seeds import NETWORK_STREAMS
from kinds.training import EpochLoop, TrainingRows, save_models
from kinds.training_spec import ImageTrainingSpec


class TrainingJob(Protocol):
    """The spec fields an entry is reset from."""

    seed: int
    deterministic: bool
    learning_rate: float


@dataclass(frozen=True)
class OptimizerPlan:
    """An optimizer of the entry: how to make it and the networks it trains."""

    make: Callable[[], keras.optimizers.Optimizer]
    trains: tuple[str, ...]


class TrainingModels(ABC):
    """Networks (built under the precision policy, in declaration order: the first
    draws its initial weights from Stream.FIRST_NETWORK, the second from
    SECOND_NETWORK), optimizers (loss-scaled under mixed precision, see kinds.precision),
    `state` (what a checkpoint holds) and `train_step` (traced once per op-determinism
    setting: a fixed signature).

    TensorFlow picks some ops' implementations while it traces (the deterministic sum of
    an embedding's gradient, for one), so a step traced for a job without op determinism
    would compute other bits for a deterministic job: each setting has its own trace.

    `variables` are more of the entry's state for checkpoints, by name; `configure` resets
    them per job. `jobs` counts the jobs that used this entry, `tracing_count` the traces
    of the step of the current job's setting.
    """

    def __init__(
        self,
        networks: Mapping[str, Callable[[], keras.Model]],
        optimizers: Mapping[str, OptimizerPlan],
        signature: Sequence[tf.TensorSpec],
        *,
        mixed: bool,
        autograph: bool = True,
        variables: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        if len(networks) > len(NETWORK_STREAMS):
            raise ValueError(f"at most {len(NETWORK_STREAMS)} networks have a seed stream")
        with precision.compute_policy(mixed):
            self.networks = {name: build() for name, build in networks.items()}
        self.optimizers = {
            name: precision.optimizer(plan.make(), mixed) for name, plan in optimizers.items()
        }
        trained = {name: self._variables(plan.trains) for name, plan in optimizers.items()}
        for name, optimizer in self.optimizers.items():
            optimizer.build(trained[name])
        self.trained = trained
        """Optimizer name -> the variables it trains."""
        self.state = keras_state.TrainingState(
            models=self.networks,
            optimizers={name: (self.optimizers[name], trained[name]) for name in optimizers},
            variables=variables or {},
        )
        self._trace = partial(
            tf.function, self._train_step, input_signature=list(signature), autograph=autograph
        )
        self._steps: dict[bool, Any] = {}
        self.train_step = self._step_for(deterministic=False)
        self.jobs = 0

    @property
    def tracing_count(self) -> int:
        return int(self.train_step.experimental_get_tracing_count())

    def start_job(self, spec: TrainingJob) -> None:
        """Reset every variable to what a fresh build would hold for this job, and take
        the step traced for its op-determinism setting."""
        self.train_step = self._step_for(spec.deterministic)
        for stream, network in zip(NETWORK_STREAMS, self.networks.values(), strict=False):
            keras_state.reinitialize(network, (spec.seed, stream))
        for optimizer in self.optimizers.values():
            keras_state.reset_optimizer(optimizer, spec.learning_rate)
        self.configure(spec)
        self.jobs += 1

    def _step_for(self, deterministic: bool) -> Any:
        if deterministic not in self._steps:
            self._steps[deterministic] = self._trace()
        return self._steps[deterministic]

    def configure(self, spec: Any) -> None:  # noqa: B027 - most entries have none
        """Set the entry's own per-job variables (label noise, noise factor...)."""

    @abstractmethod
    def _train_step(self, *inputs: tf.Tensor) -> tf.Tensor:
        """One update on a batch; returns a vector with one loss per metric."""

    def _variables(self, names: Sequence[str]) -> list[Any]:
        return [v for name in names for v in self.networks[name].trainable_variables]


def image_step_signature(
    image_size: int, channels: int, *, labelled: bool = False
) -> list[tf.TensorSpec]:
    """The step inputs of an image kind: all images (uint8), with `labelled` the class of
    every image, this batch's indices, and the random key (seed, global step)."""
    images = tf.TensorSpec([None, image_size, image_size, channels], tf.uint8)
    labels = [tf.TensorSpec([None], tf.int32)] if labelled else []
    return [images, *labels, tf.TensorSpec([None], tf.int32), tf.TensorSpec([2], tf.int64)]


@dataclass(frozen=True)
class TrainingImages:
    """A dataset's images (uint8) as tensors, with their classes for a labelled one:
    what an image kind's step takes before the batch indices and key."""

    tensors: tuple[tf.Tensor, ...]
    count: int
    dataset: str
    unit: str = "images"
    """What a row is, for errors: images, pairs."""

    @classmethod
    def load(cls, spec: ImageTrainingSpec, *, labelled: bool = False) -> TrainingImages:
        dataset, size, seed, limit = spec.dataset, spec.image_size, spec.seed, spec.dataset_size
        if labelled:
            images, labels = load_labelled_images(dataset, size, seed=seed, limit=limit)
            tensors = (tf.convert_to_tensor(images), tf.convert_to_tensor(labels))
            return cls(tensors, len(images), spec.dataset)
        images = load_images(dataset, size, seed=seed, limit=limit)
        return cls((tf.convert_to_tensor(images),), len(images), spec.dataset)

    def first(self, count: int) -> np.ndarray:
        """The first `count` images as float32 in [0, 1] (previews)."""
        return self.tensors[0][:count].numpy().astype(np.float32) / 255.0

    @property
    def rows(self) -> TrainingRows:
        return TrainingRows(
            count=self.count,
            source="dataset",
            describe=f"dataset {self.dataset!r} has {self.count} {self.unit}",
            too_small="dataset_too_small",
            identity={"dataset_images": self.count},
        )


def train_on_images(
    spec: ImageTrainingSpec,
    ctx: JobContext,
    models: TrainingModels,
    images: TrainingImages,
    *,
    metrics: Sequence[str],
    end_epoch: Callable[[int, int], None],
    final: Sequence[str],
    evaluate: Callable[[], Mapping[str, float]] | None = None,
    evaluate_notes: Mapping[str, str] | None = None,
) -> None:
    """Train `models` on `images` to the last epoch (from the job's checkpoint, if any),
    then record the networks named in `final` as model outputs. `evaluate` and
    `evaluate_notes` are the loop's (EpochLoop: held-out and quality metrics)."""

    def step(indices: np.ndarray, key: np.ndarray) -> list[float]:
        return models.train_step(*images.tensors, indices, key).numpy().tolist()

    loop = EpochLoop(
        spec, ctx, rows=images.rows, metrics=metrics, train_step=step, state=models.state,
        end_epoch=end_epoch, evaluate=evaluate, evaluate_notes=evaluate_notes,
    )  # fmt: skip
    last_step = loop.run(ctx.restore())
    networks = {name: models.networks[name] for name in final}
    save_models(ctx, networks, epoch=spec.epochs, step=last_step)
