"""Model and training loop of the denoising-ae kind. Imports TensorFlow: run only.

Reproducibility as in the dcgan kind: weights from (seed, index), each step's noise from
a stateless generator keyed by (seed, global step), the data order from (seed, epoch),
the preview's noise from (seed, PREVIEW_NOISE); checkpoints hold weights and optimizer
slots.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from kinds import keras_state, precision
from kinds.contract import JobContext
from kinds.datasets import load_images
from kinds.denoising_ae import Spec
from kinds.images import grid_png
from kinds.reproducibility import configure_randomness
from kinds.sampling import predict
from kinds.training import EpochLoop, save_models

# Second seed component of each use of the job seed (4 is the data order).
AUTOENCODER_INIT, PREVIEW_NOISE = 1, 2


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


class DenoisingModels:
    """Per-process cache entry for one shape: autoencoder, optimizer, compiled step."""

    builds = 0

    def __init__(self, image_size: int, channels: int, encoding_dim: int, mixed: bool) -> None:
        with precision.compute_policy(mixed):
            self.autoencoder = build_autoencoder(image_size, channels, encoding_dim)
        self.optimizer = precision.optimizer(keras.optimizers.Adam(), mixed)
        self.optimizer.build(self.autoencoder.trainable_variables)
        self.state = keras_state.TrainingState(
            models={"autoencoder": self.autoencoder},
            optimizers={"optimizer": (self.optimizer, self.autoencoder.trainable_variables)},
        )
        self.noise_factor = tf.Variable(0.0, trainable=False, name="noise_factor")
        signature = [
            tf.TensorSpec([None, image_size, image_size, channels], tf.uint8),  # all images
            tf.TensorSpec([None], tf.int32),  # indices of this batch
            tf.TensorSpec([2], tf.int64),  # random key (seed, global step)
        ]
        self.train_step = tf.function(self._train_step, input_signature=signature)
        self.jobs = 0
        DenoisingModels.builds += 1

    @property
    def tracing_count(self) -> int:
        return self.train_step.experimental_get_tracing_count()

    def start_job(self, spec: Spec) -> None:
        keras_state.reinitialize(self.autoencoder, (spec.seed, AUTOENCODER_INIT))
        keras_state.reset_optimizer(self.optimizer, spec.learning_rate)
        self.noise_factor.assign(spec.noise_factor)
        self.jobs += 1

    def _train_step(self, data: tf.Tensor, indices: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        """One Adam step from noisy to clean images; returns [loss] (mean squared error)."""
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
    images = load_images(spec.dataset, spec.image_size, seed=spec.seed, limit=spec.dataset_size)
    models = ctx.cache.get_or_build(
        cache_key(spec),
        lambda: DenoisingModels(
            spec.image_size, spec.channels, spec.encoding_dim, spec.mixed_precision
        ),
    )
    models.start_job(spec)
    data = tf.convert_to_tensor(images)
    clean = images[: spec.samples].astype(np.float32) / 255.0
    rng = np.random.default_rng([spec.seed, PREVIEW_NOISE])
    noisy = (clean + spec.noise_factor * rng.standard_normal(clean.shape)).astype(np.float32)

    def train_step(indices: np.ndarray, key: np.ndarray) -> list[float]:
        return models.train_step(data, indices, key).numpy().tolist()

    def save_preview(epoch: int, step: int) -> None:
        rows = np.concatenate([noisy, predict(models.autoencoder, noisy), clean])
        png = grid_png(rows, columns=len(clean))
        name = f"epoch_{epoch:04d}.png"
        ctx.save_output("sample", name, png, epoch=epoch, step=step)

    loop = EpochLoop(
        spec,
        ctx,
        image_count=len(images),
        metrics=("loss",),
        train_step=train_step,
        state=models.state.arrays,
        load_state=models.state.load,
        end_epoch=save_preview,
    )
    del images
    step = loop.run()
    save_models(ctx, {"autoencoder": models.autoencoder}, epoch=spec.epochs, step=step)
