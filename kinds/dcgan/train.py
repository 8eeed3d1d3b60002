"""Training loop of the dcgan kind. Imports TensorFlow: loaded by `run` only.

Reproducibility: every random number comes from the job seed. Weights are drawn per
variable from (seed, network, index); each step's latent vectors and label noise from
stateless ops keyed by (seed, global step); each epoch's data order from
(seed, epoch); dropout from the discriminator's seed-generator state, which the
checkpoint holds together with all weights and optimizer slots. A run resumed from any
checkpoint therefore repeats the uninterrupted run exactly when op determinism is on.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kinds.contract import JobContext
from kinds.datasets import load_images
from kinds.dcgan import Spec
from kinds.dcgan.model import build_discriminator, build_generator
from kinds.gan import GanModels
from kinds.images import grid_png
from kinds.reproducibility import configure_randomness
from kinds.training import EpochLoop, save_models

GENERATED_LABEL, REAL_LABEL = 1.0, 0.0  # the generator is trained towards REAL_LABEL
# Second seed component of each use of the job seed, so no two uses share numbers
# (1 and 2: initial weights, in kinds.gan; 4: data order, in kinds.training).
SAMPLE_LATENTS = 3


def cache_key(spec: Spec) -> tuple[object, ...]:
    return ("dcgan", spec.image_size, spec.channels, spec.latent_dim, spec.mixed_precision)


class DcganModels(GanModels):
    """The dcgan cache entry for one shape: the GAN pair and its compiled train step."""

    builds = 0

    def __init__(self, image_size: int, channels: int, latent_dim: int, mixed: bool) -> None:
        super().__init__(
            lambda: build_generator(image_size, channels, latent_dim),
            lambda: build_discriminator(image_size, channels),
            mixed,
        )
        self.latent_dim = latent_dim
        # A fixed signature: one trace per entry, whatever the job's data or seed.
        signature = [
            tf.TensorSpec([None, image_size, image_size, channels], tf.uint8),  # all images
            tf.TensorSpec([None], tf.int32),  # indices of this batch
            tf.TensorSpec([2], tf.int64),  # random key (seed, global step)
        ]
        self.train_step = tf.function(self._train_step, input_signature=signature)

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
            d_scaled = self.discriminator_optimizer.scale_loss(d_loss)  # see kinds.precision
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
        self.ctx.save_output("sample", name, png, epoch=epoch, step=step)
