"""Training loop of the dcgan kind. Imports TensorFlow: loaded by `run` only.

Reproducibility: every random number comes from the job seed. Weights are drawn per
variable from (seed, network, index); each step's latent vectors and label noise from
stateless ops keyed by (seed, global step); each epoch's data order from
(seed, epoch); dropout from the discriminator's seed-generator state, which the
checkpoint holds together with all weights and optimizer slots. A run resumed from any
checkpoint therefore repeats the uninterrupted run exactly when op determinism is on.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from worker.jobs import keras_state
from worker.jobs.context import Checkpoint, JobContext, JobError
from worker.jobs.datasets import load_images
from worker.jobs.dcgan import Spec
from worker.jobs.dcgan.model import build_discriminator, build_generator
from worker.jobs.images import grid_png

GENERATED_LABEL, REAL_LABEL = 1.0, 0.0  # the generator is trained towards REAL_LABEL
# Second seed component of each use of the job seed, so no two uses share numbers.
GENERATOR_INIT, DISCRIMINATOR_INIT, SAMPLE_LATENTS, DATA_ORDER = 1, 2, 3, 4
SEED_MODULUS = 2**63  # stateless random keys are int64


def cache_key(spec: Spec) -> tuple[str, int, int, int]:
    return ("dcgan", spec.image_size, spec.channels, spec.latent_dim)


class DcganModels:
    """Per-process cache entry for one shape: both networks, both optimizers and the
    compiled train step. Jobs reuse it through `start_job`, which resets all state.

    `builds` (class-wide) counts entries built in this process, `jobs` the jobs that
    used this entry, `tracing_count` the traces of the train step.
    """

    builds = 0

    def __init__(self, image_size: int, channels: int, latent_dim: int) -> None:
        self.latent_dim = latent_dim
        self.generator = build_generator(image_size, channels, latent_dim)
        self.discriminator = build_discriminator(image_size, channels)
        self.generator_optimizer = keras.optimizers.Adam()
        self.discriminator_optimizer = keras.optimizers.Adam()
        self.generator_optimizer.build(self.generator.trainable_variables)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)
        self.label_noise = tf.Variable(0.0, trainable=False, name="label_noise")
        self.loss_fn = keras.losses.BinaryCrossentropy()
        # A fixed signature: one trace per entry, whatever the job's data or seed.
        signature = [
            tf.TensorSpec([None, image_size, image_size, channels], tf.uint8),  # all images
            tf.TensorSpec([None], tf.int32),  # indices of this batch
            tf.TensorSpec([2], tf.int64),  # random key (seed, global step)
        ]
        self.train_step = tf.function(self._train_step, input_signature=signature)
        self.jobs = 0
        DcganModels.builds += 1

    @property
    def tracing_count(self) -> int:
        return self.train_step.experimental_get_tracing_count()

    def start_job(self, spec: Spec) -> None:
        """Reset everything to the state a fresh build would have for this spec."""
        keras_state.reinitialize(self.generator, (spec.seed, GENERATOR_INIT))
        keras_state.reinitialize(self.discriminator, (spec.seed, DISCRIMINATOR_INIT))
        keras_state.reset_optimizer(self.generator_optimizer, spec.learning_rate)
        keras_state.reset_optimizer(self.discriminator_optimizer, spec.learning_rate)
        self.label_noise.assign(spec.label_noise)
        self.jobs += 1

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {
            **keras_state.model_arrays("generator", self.generator),
            **keras_state.model_arrays("discriminator", self.discriminator),
            **keras_state.optimizer_arrays("generator_optimizer", self.generator_optimizer),
            **keras_state.optimizer_arrays("discriminator_optimizer", self.discriminator_optimizer),
        }

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        keras_state.load_model_arrays("generator", self.generator, arrays)
        keras_state.load_model_arrays("discriminator", self.discriminator, arrays)
        keras_state.load_optimizer_arrays(
            "generator_optimizer",
            self.generator_optimizer,
            arrays,
            self.generator.trainable_variables,
        )
        keras_state.load_optimizer_arrays(
            "discriminator_optimizer",
            self.discriminator_optimizer,
            arrays,
            self.discriminator.trainable_variables,
        )

    def sample(self, latents: np.ndarray) -> np.ndarray:
        return self.generator(latents, training=False).numpy()

    def _train_step(self, data: tf.Tensor, indices: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        """One discriminator update, then one generator update; returns [d_loss, g_loss]."""
        real = tf.cast(tf.gather(data, indices), tf.float32) / 255.0
        count = tf.shape(real)[0]
        d_key, g_key, noise_key = tf.unstack(tf.random.experimental.stateless_split(key, 3))

        latents = tf.random.stateless_normal((count, self.latent_dim), seed=d_key)
        images = tf.concat([self.generator(latents, training=True), real], axis=0)
        labels = tf.concat(
            [tf.fill((count, 1), GENERATED_LABEL), tf.fill((count, 1), REAL_LABEL)], axis=0
        )
        labels += self.label_noise * tf.random.stateless_uniform(tf.shape(labels), seed=noise_key)
        d_variables = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(images, training=True))
        self.discriminator_optimizer.apply(tape.gradient(d_loss, d_variables), d_variables)

        latents = tf.random.stateless_normal((count, self.latent_dim), seed=g_key)
        misleading = tf.fill((count, 1), REAL_LABEL)
        g_variables = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            generated = self.generator(latents, training=True)
            g_loss = self.loss_fn(misleading, self.discriminator(generated, training=True))
        self.generator_optimizer.apply(tape.gradient(g_loss, g_variables), g_variables)
        return tf.stack([d_loss, g_loss])


@dataclasses.dataclass
class Position:
    """Where training stands: `step` steps of `epoch` are done (epochs count from 1)."""

    epoch: int = 1
    step: int = 0
    global_step: int = 0
    d_loss_sum: float = 0.0  # sums over the finished steps of this epoch
    g_loss_sum: float = 0.0


def train(spec: Spec, ctx: JobContext) -> None:
    _configure_randomness(spec)
    images = load_images(spec.dataset, spec.image_size, seed=spec.seed, limit=spec.dataset_size)
    models = ctx.cache.get_or_build(
        cache_key(spec), lambda: DcganModels(spec.image_size, spec.channels, spec.latent_dim)
    )
    models.start_job(spec)
    trainer = _Trainer(spec, ctx, models, images)
    del images  # the trainer holds the pixels as a tensor; don't keep a second copy
    trainer.run()


class _Trainer:
    def __init__(self, spec: Spec, ctx: JobContext, models: DcganModels, images: np.ndarray):
        self.spec, self.ctx, self.models = spec, ctx, models
        self.image_count = len(images)
        self.steps = steps_per_epoch(spec, self.image_count)
        self.total = spec.epochs * self.steps
        self.data = tf.convert_to_tensor(images)
        self.seed = spec.seed % SEED_MODULUS
        rng = np.random.default_rng([spec.seed, SAMPLE_LATENTS])
        self.sample_latents = rng.standard_normal((spec.samples, spec.latent_dim), np.float32)

    def run(self) -> None:
        position = self._resume()
        while position.epoch <= self.spec.epochs:
            order = epoch_order(self.spec.seed, position.epoch, self.image_count)
            while position.step < self.steps:
                self._step(position, order)
            position = Position(epoch=position.epoch + 1, global_step=position.global_step)
        self.ctx.save_output(
            "model",
            "generator.keras",
            functools.partial(save_model, self.models.generator),
            epoch=self.spec.epochs,
            step=position.global_step,
        )

    def _step(self, position: Position, order: np.ndarray) -> None:
        batch = self.spec.batch_size
        indices = order[position.step * batch : (position.step + 1) * batch]
        key = np.array([self.seed, position.global_step], dtype=np.int64)
        d_loss, g_loss = self.models.train_step(self.data, indices, key).numpy().tolist()
        if not (math.isfinite(d_loss) and math.isfinite(g_loss)):
            raise JobError(
                "nan_loss",
                f"loss is not finite at epoch {position.epoch}, step {position.global_step + 1} "
                f"(d_loss={d_loss}, g_loss={g_loss}); try a lower learning_rate",
            )
        position.step += 1
        position.global_step += 1
        position.d_loss_sum += d_loss
        position.g_loss_sum += g_loss
        self.ctx.progress(
            position.global_step,
            self.total,
            epoch=position.epoch,
            metrics={"d_loss": d_loss, "g_loss": g_loss},
        )
        if position.step == self.steps:
            self._finish_epoch(position)
        self.ctx.boundary(position.global_step, self._snapshotter(position))

    def _finish_epoch(self, position: Position) -> None:
        epoch, step = position.epoch, position.global_step
        means = {
            "d_loss": position.d_loss_sum / self.steps,
            "g_loss": position.g_loss_sum / self.steps,
        }
        self.ctx.metrics(means, step=step, epoch=epoch)
        png = grid_png(self.models.sample(self.sample_latents))
        name = f"epoch_{epoch:04d}.png"
        self.ctx.save_output(
            "sample", name, lambda path: path.write_bytes(png), epoch=epoch, step=step
        )

    def _snapshotter(self, position: Position) -> functools.partial[Checkpoint]:
        # A finished epoch is saved as the start of the next one.
        if position.step == self.steps:
            position = Position(epoch=position.epoch + 1, global_step=position.global_step)
        return functools.partial(self._snapshot, dataclasses.replace(position))

    def _snapshot(self, position: Position) -> Checkpoint:
        meta = {
            "epoch": position.epoch,
            "step_in_epoch": position.step,
            "global_step": position.global_step,
            "d_loss_sum": position.d_loss_sum,
            "g_loss_sum": position.g_loss_sum,
            "steps_per_epoch": self.steps,
            "dataset_images": self.image_count,
        }
        return Checkpoint(step=position.global_step, arrays=self.models.state_arrays(), meta=meta)

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
            self.models.load_state(dict(checkpoint.arrays))
        except keras_state.StateMismatch as exc:
            raise JobError("checkpoint_mismatch", f"cannot resume: {exc}") from None
        return Position(
            epoch=int(meta["epoch"]),
            step=int(meta["step_in_epoch"]),
            global_step=int(meta["global_step"]),
            d_loss_sum=float(meta["d_loss_sum"]),
            g_loss_sum=float(meta["g_loss_sum"]),
        )


def steps_per_epoch(spec: Spec, image_count: int) -> int:
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


def save_model(model: keras.Model, path: Path) -> None:
    """model.save, also to a path without the .keras suffix Keras insists on."""
    if path.suffix == ".keras":
        model.save(path)
        return
    with tempfile.TemporaryDirectory() as directory:
        target = Path(directory) / "model.keras"
        model.save(target)
        shutil.move(target, path)


def _configure_randomness(spec: Spec) -> None:
    # Seeds Python, numpy and TensorFlow's global generators for anything that uses them.
    keras.utils.set_random_seed(spec.seed % 2**32)
    if spec.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        # Op determinism is process-wide; a previous deterministic job must not leave it on.
        tf_config.disable_op_determinism()
