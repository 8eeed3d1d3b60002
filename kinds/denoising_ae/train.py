"""Model and training of the denoising-ae kind. Imports TensorFlow: loaded by `run` only.

Reproducibility as in the dcgan kind: weights from (seed, index), each step's noise from
a stateless generator keyed by (seed, global step), the data order from (seed, epoch),
the preview's noise from (seed, Stream.SAMPLES); checkpoints hold weights and optimizer
slots.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from kinds.contract import JobContext
from kinds.denoising_ae import Spec
from kinds.images import grid_png
from kinds.reproducibility import configure_randomness
from kinds.sampling import predict
from kinds.seeds import Stream
from kinds.training import save_sample
from kinds.training_models import (
    OptimizerPlan,
    TrainingImages,
    TrainingModels,
    image_step_signature,
    train_on_images,
)


def build_autoencoder(image_size: int, channels: int, encoding_dim: int) -> keras.Model:
    """Image -> flattened pixels -> ReLU code (encoding_dim) -> sigmoid pixels -> image."""
    shape = (image_size, image_size, channels)
    return keras.Sequential(
        [
            keras.Input(shape=shape),
            layers.Flatten(),
            layers.Dense(encoding_dim, activation="relu", name="code"),
            # float32 output, also under mixed precision (kinds.precision)
            layers.Dense(image_size * image_size * channels, activation="sigmoid", dtype="float32"),
            layers.Reshape(shape, dtype="float32"),
        ],
        name="autoencoder",
    )


def cache_key(spec: Spec) -> tuple[object, ...]:
    return ("denoising-ae", spec.image_size, spec.channels, spec.encoding_dim, spec.mixed_precision)


class DenoisingModels(TrainingModels):
    """The autoencoder of one shape, its Adam and the noise factor."""

    def __init__(self, image_size: int, channels: int, encoding_dim: int, mixed: bool) -> None:
        super().__init__(
            networks={"autoencoder": lambda: build_autoencoder(image_size, channels, encoding_dim)},
            optimizers={"optimizer": OptimizerPlan(keras.optimizers.Adam, ("autoencoder",))},
            signature=image_step_signature(image_size, channels),
            mixed=mixed,
        )
        self.autoencoder = self.networks["autoencoder"]
        self.optimizer = self.optimizers["optimizer"]
        self.noise_factor = tf.Variable(0.0, trainable=False, name="noise_factor")

    def configure(self, spec: Spec) -> None:
        self.noise_factor.assign(spec.noise_factor)

    def _train_step(self, data: tf.Tensor, *batch: tf.Tensor) -> tf.Tensor:
        """One Adam step from noisy to clean images; returns [loss] (mean squared error)."""
        indices, key = batch
        clean = tf.cast(tf.gather(data, indices), tf.float32) / 255.0
        noisy = clean + self.noise_factor * tf.random.stateless_normal(tf.shape(clean), seed=key)
        variables = self.autoencoder.trainable_variables
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(clean - self.autoencoder(noisy, training=True)))
            scaled = self.optimizer.scale_loss(loss)  # see kinds.precision
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return tf.reshape(loss, [1])


def train(spec: Spec, ctx: JobContext) -> None:
    configure_randomness(spec.seed, spec.deterministic)
    images = TrainingImages.load(spec)
    models = ctx.cache.get_or_build(
        cache_key(spec),
        lambda: DenoisingModels(
            spec.image_size, spec.channels, spec.encoding_dim, spec.mixed_precision
        ),
    )
    models.start_job(spec)
    clean = images.first(spec.samples)
    rng = np.random.default_rng([spec.seed, Stream.SAMPLES])
    noisy = (clean + spec.noise_factor * rng.standard_normal(clean.shape)).astype(np.float32)

    def save_preview(epoch: int, step: int) -> None:
        rows = [noisy, predict(models.autoencoder, noisy)]
        if spec.noise_factor:  # a plain autoencoder's input row is the clean row already
            rows.append(clean)
        save_sample(ctx, grid_png(np.concatenate(rows), columns=len(clean)), epoch=epoch, step=step)

    train_on_images(
        spec, ctx, models, images, metrics=("loss",), end_epoch=save_preview,
        final=("autoencoder",),
    )  # fmt: skip
