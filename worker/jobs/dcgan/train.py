"""Training loop of the dcgan kind. Imports TensorFlow: loaded by `run` only.

Reproducibility: every random number comes from the job seed. Weights are drawn per
variable from (seed, network, index); each step's latent vectors and label noise from
stateless ops keyed by (seed, global step); each epoch's data order from
(seed, epoch); dropout from the discriminator's seed-generator state, which the
checkpoint holds together with all weights and optimizer slots. A run resumed from any
checkpoint therefore repeats the uninterrupted run exactly when op determinism is on.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from worker.jobs import keras_state, precision
from worker.jobs.context import JobContext
from worker.jobs.datasets import load_images
from worker.jobs.dcgan import Spec
from worker.jobs.dcgan.model import build_discriminator, build_generator
from worker.jobs.images import grid_png
from worker.jobs.reproducibility import configure_randomness
from worker.jobs.training import EpochLoop, save_models

GENERATED_LABEL, REAL_LABEL = 1.0, 0.0  # the generator is trained towards REAL_LABEL
# Second seed component of each use of the job seed, so no two uses share numbers
# (4 is the data order, in worker.jobs.training).
GENERATOR_INIT, DISCRIMINATOR_INIT, SAMPLE_LATENTS = 1, 2, 3


def cache_key(spec: Spec) -> tuple[object, ...]:
    return ("dcgan", spec.image_size, spec.channels, spec.latent_dim, spec.mixed_precision)


class DcganModels:
    """Per-process cache entry for one shape: both networks, both optimizers and the
    compiled train step. Jobs reuse it through `start_job`, which resets all state.

    `builds` (class-wide) counts entries built in this process, `jobs` the jobs that
    used this entry, `tracing_count` the traces of the train step.
    """

    builds = 0

    def __init__(self, image_size: int, channels: int, latent_dim: int, mixed: bool) -> None:
        self.latent_dim = latent_dim
        with precision.compute_policy(mixed):
            self.generator = build_generator(image_size, channels, latent_dim)
            self.discriminator = build_discriminator(image_size, channels)
        self.generator_optimizer = precision.optimizer(keras.optimizers.Adam(), mixed)
        self.discriminator_optimizer = precision.optimizer(keras.optimizers.Adam(), mixed)
        self.generator_optimizer.build(self.generator.trainable_variables)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)
        self.label_noise = tf.Variable(0.0, trainable=False, name="label_noise")
        self.loss_fn = keras.losses.BinaryCrossentropy()
        self.state = keras_state.TrainingState(
            models={"generator": self.generator, "discriminator": self.discriminator},
            optimizers={
                "generator_optimizer": (
                    self.generator_optimizer,
                    self.generator.trainable_variables,
                ),
                "discriminator_optimizer": (
                    self.discriminator_optimizer,
                    self.discriminator.trainable_variables,
                ),
            },
        )
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
            d_scaled = self.discriminator_optimizer.scale_loss(d_loss)  # see worker.jobs.precision
        self.discriminator_optimizer.apply(tape.gradient(d_scaled, d_variables), d_variables)

        latents = tf.random.stateless_normal((count, self.latent_dim), seed=g_key)
        misleading = tf.fill((count, 1), REAL_LABEL)
        g_variables = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            generated = self.generator(latents, training=True)
            g_loss = self.loss_fn(misleading, self.discriminator(generated, training=True))
            g_scaled = self.generator_optimizer.scale_loss(g_loss)
        self.generator_optimizer.apply(tape.gradient(g_scaled, g_variables), g_variables)
        return tf.stack([d_loss, g_loss])


def train(spec: Spec, ctx: JobContext) -> None:
    configure_randomness(spec.seed, spec.deterministic)
    images = load_images(spec.dataset, spec.image_size, seed=spec.seed, limit=spec.dataset_size)
    models = ctx.cache.get_or_build(
        cache_key(spec),
        lambda: DcganModels(spec.image_size, spec.channels, spec.latent_dim, spec.mixed_precision),
    )
    models.start_job(spec)
    trainer = _Trainer(spec, ctx, models, images)
    del images  # the trainer holds the pixels as a tensor; don't keep a second copy
    trainer.run()


class _Trainer:
    def __init__(self, spec: Spec, ctx: JobContext, models: DcganModels, images: np.ndarray):
        self.spec, self.ctx, self.models = spec, ctx, models
        self.data = tf.convert_to_tensor(images)
        rng = np.random.default_rng([spec.seed, SAMPLE_LATENTS])
        self.sample_latents = rng.standard_normal((spec.samples, spec.latent_dim), np.float32)
        self.loop = EpochLoop(
            spec,
            ctx,
            image_count=len(images),
            metrics=("d_loss", "g_loss"),
            train_step=self._train_step,
            state=models.state.arrays,
            load_state=models.state.load,
            end_epoch=self._save_grid,
        )

    def run(self) -> None:
        step = self.loop.run()
        generator = {"generator": self.models.generator}
        save_models(self.ctx, generator, epoch=self.spec.epochs, step=step)

    def _train_step(self, indices: np.ndarray, key: np.ndarray) -> list[float]:
        return self.models.train_step(self.data, indices, key).numpy().tolist()

    def _save_grid(self, epoch: int, step: int) -> None:
        png = grid_png(self.models.sample(self.sample_latents))
        name = f"epoch_{epoch:04d}.png"
        self.ctx.save_output(
            "sample", name, lambda path: path.write_bytes(png), epoch=epoch, step=step
        )
