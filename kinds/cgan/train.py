"""Training loop of the cgan kind. Imports TensorFlow: loaded by `run` only.

Reproducibility as in the dcgan kind: weights per variable from (seed, network, index),
each step's latent vectors and label noise from stateless ops keyed by (seed, global
step), the data order from (seed, epoch), dropout from the discriminator's
seed-generator state, which the checkpoint holds with all weights and optimizer slots.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kinds.cgan import Spec
from kinds.cgan.model import build_discriminator, build_generator
from kinds.contract import JobContext
from kinds.datasets import load_labelled_images
from kinds.gan import GanModels
from kinds.images import grid_png
from kinds.reproducibility import configure_randomness
from kinds.sampling import predict
from kinds.training import EpochLoop, save_models

GENERATED_LABEL, REAL_LABEL = 1.0, 0.0  # the generator is trained towards REAL_LABEL
# Second seed component of each use of the job seed, so no two uses share numbers
# (1 and 2: initial weights, in kinds.gan; 4: data order, in kinds.training).
SAMPLE_LATENTS = 3


def cache_key(spec: Spec) -> tuple[object, ...]:
    return (
        "cgan",
        spec.image_size,
        spec.channels,
        spec.latent_dim,
        spec.classes,
        spec.mixed_precision,
    )


class CganModels(GanModels):
    """The cgan cache entry for one shape: the GAN pair and its compiled train step."""

    builds = 0

    def __init__(self, spec: Spec) -> None:
        size, channels, classes = spec.image_size, spec.channels, spec.classes
        super().__init__(
            lambda: build_generator(size, channels, spec.latent_dim, classes),
            lambda: build_discriminator(size, channels, classes),
            spec.mixed_precision,
        )
        self.latent_dim, self.classes = spec.latent_dim, classes
        signature = [
            tf.TensorSpec([None, size, size, channels], tf.uint8),  # all images
            tf.TensorSpec([None], tf.int32),  # the class of every image
            tf.TensorSpec([None], tf.int32),  # indices of this batch
            tf.TensorSpec([2], tf.int64),  # random key (seed, global step)
        ]
        self.train_step = tf.function(self._train_step, input_signature=signature)

    def _train_step(
        self, data: tf.Tensor, classes: tf.Tensor, indices: tf.Tensor, key: tf.Tensor
    ) -> tf.Tensor:
        """One discriminator update, then one generator update, both conditioned on the
        batch's classes; returns [d_loss, g_loss]."""
        real = tf.cast(tf.gather(data, indices), tf.float32) / 255.0
        condition = tf.one_hot(tf.gather(classes, indices), self.classes)
        count = tf.shape(real)[0]
        d_key, g_key, noise_key = tf.unstack(tf.random.experimental.stateless_split(key, 3))

        latents = tf.random.stateless_normal((count, self.latent_dim), seed=d_key)
        generated = self.generator([latents, condition], training=True)
        images = tf.concat([generated, real], axis=0)
        conditions = tf.concat([condition, condition], axis=0)
        labels = tf.concat(
            [tf.fill((count, 1), GENERATED_LABEL), tf.fill((count, 1), REAL_LABEL)], axis=0
        )
        labels += self.label_noise * tf.random.stateless_uniform(tf.shape(labels), seed=noise_key)
        d_variables = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            predictions = self.discriminator([images, conditions], training=True)
            d_loss = self.loss_fn(labels, predictions)
            d_scaled = self.discriminator_optimizer.scale_loss(d_loss)  # see kinds.precision
        self.discriminator_optimizer.apply(tape.gradient(d_scaled, d_variables), d_variables)

        latents = tf.random.stateless_normal((count, self.latent_dim), seed=g_key)
        misleading = tf.fill((count, 1), REAL_LABEL)
        g_variables = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            generated = self.generator([latents, condition], training=True)
            predictions = self.discriminator([generated, condition], training=True)
            g_loss = self.loss_fn(misleading, predictions)
            g_scaled = self.generator_optimizer.scale_loss(g_loss)
        self.generator_optimizer.apply(tape.gradient(g_scaled, g_variables), g_variables)
        return tf.stack([d_loss, g_loss])


def class_grid_inputs(latents: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Generator inputs of a grid with one row per class and one column per latent vector."""
    columns = len(latents)
    tiled = np.tile(latents, (classes, 1))
    onehot = np.eye(classes, dtype=np.float32)[np.repeat(np.arange(classes), columns)]
    return tiled, onehot


def train(spec: Spec, ctx: JobContext) -> None:
    configure_randomness(spec.seed, spec.deterministic)
    images, labels = load_labelled_images(
        spec.dataset, spec.image_size, seed=spec.seed, limit=spec.dataset_size
    )
    models = ctx.cache.get_or_build(
        cache_key(spec),
        lambda: CganModels(spec),
    )
    models.start_job(spec)
    data, classes = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
    rng = np.random.default_rng([spec.seed, SAMPLE_LATENTS])
    latents = rng.standard_normal((spec.samples_per_class, spec.latent_dim), np.float32)
    grid_inputs = class_grid_inputs(latents, spec.classes)

    def train_step(indices: np.ndarray, key: np.ndarray) -> list[float]:
        return models.train_step(data, classes, indices, key).numpy().tolist()

    def save_grid(epoch: int, step: int) -> None:
        png = grid_png(predict(models.generator, grid_inputs), columns=spec.samples_per_class)
        name = f"epoch_{epoch:04d}.png"
        ctx.save_output("sample", name, png, epoch=epoch, step=step)

    loop = EpochLoop(
        spec,
        ctx,
        image_count=len(images),
        metrics=("d_loss", "g_loss"),
        train_step=train_step,
        state=models.state.arrays,
        load_state=models.state.load,
        end_epoch=save_grid,
    )
    del images, labels
    step = loop.run()
    save_models(ctx, {"generator": models.generator}, epoch=spec.epochs, step=step)
