"""The GAN that the dcgan and cgan kinds train: one cache entry holding both networks,
an Adam optimizer for each, the label noise, and one train step, conditioned on the
class when the entry is built with `classes` (a cGAN) and unconditional otherwise.

Losses as the Keras DCGAN: binary cross-entropy with generated=1 and real=0, uniform
noise on the discriminator's labels, and the generator trained towards "real". A step
makes `discriminator_steps` (k) discriminator updates on its real batch, each with
fresh latent vectors and label noise, then one generator update. The discriminator
judges the generator's images in inference mode, as the upsample text's
`generator.predict` (batch normalisation on its moving statistics, no dropout); the
generator trains in training mode. Each step's latent vectors and label noise come from
stateless ops keyed by (seed, global step). Imports TensorFlow: loaded by the kinds'
`run` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf

from kinds.training_models import OptimizerPlan, TrainingModels, image_step_signature

GENERATED_LABEL, REAL_LABEL = 1.0, 0.0  # the generator is trained towards REAL_LABEL
METRICS = ("d_loss", "g_loss")


class GanJob(Protocol):
    seed: int
    learning_rate: float
    label_noise: float


class GanModels(TrainingModels):
    """Generator and discriminator (in that order: their initial-weight streams) of one
    shape. A conditional entry (`classes` set) feeds both networks the one-hot class as
    their second input, and its step takes the class of every image after the images."""

    def __init__(
        self,
        build_generator: Callable[[], keras.Model],
        build_discriminator: Callable[[], keras.Model],
        *,
        image_size: int,
        channels: int,
        latent_dim: int,
        classes: int | None,
        beta_1: float,
        mixed: bool,
        discriminator_steps: int = 1,
    ) -> None:
        def adam() -> keras.optimizers.Optimizer:
            return keras.optimizers.Adam(beta_1=beta_1)

        super().__init__(
            networks={"generator": build_generator, "discriminator": build_discriminator},
            optimizers={
                "generator_optimizer": OptimizerPlan(adam, ("generator",)),
                "discriminator_optimizer": OptimizerPlan(adam, ("discriminator",)),
            },
            signature=image_step_signature(image_size, channels, labelled=classes is not None),
            mixed=mixed,
        )
        self.generator = self.networks["generator"]
        self.discriminator = self.networks["discriminator"]
        self.generator_optimizer = self.optimizers["generator_optimizer"]
        self.discriminator_optimizer = self.optimizers["discriminator_optimizer"]
        self.latent_dim, self.classes = latent_dim, classes
        self.discriminator_steps = discriminator_steps  # unrolled into the traced step
        self.label_noise = tf.Variable(0.0, trainable=False, name="label_noise")
        self.loss_fn = keras.losses.BinaryCrossentropy()

    def configure(self, spec: GanJob) -> None:
        self.label_noise.assign(spec.label_noise)

    def generator_inputs(self, latents: np.ndarray, labels: np.ndarray | None) -> Any:
        """What the generator takes for these latent vectors (and classes, conditioned)."""
        if self.classes is None:
            return latents
        assert labels is not None
        return [latents, np.eye(self.classes, dtype=np.float32)[labels]]

    def _train_step(self, data: tf.Tensor, *batch: tf.Tensor) -> tf.Tensor:
        """k discriminator updates, then one generator update; returns [d_loss (the mean
        of the k updates' losses), g_loss]. `batch` is (labels, indices, key) for a
        conditional GAN, else (indices, key)."""
        labels, indices, key = batch if self.classes is not None else (None, *batch)
        real = tf.cast(tf.gather(data, indices), tf.float32) / 255.0
        condition = None
        if labels is not None:
            condition = tf.one_hot(tf.gather(labels, indices), self.classes)
        g_key, d_keys = self._step_keys(key)
        d_losses = [self._discriminator_update(real, condition, *keys) for keys in d_keys]
        d_loss = tf.add_n(d_losses) / len(d_losses)

        count = tf.shape(real)[0]
        latents = tf.random.stateless_normal((count, self.latent_dim), seed=g_key)
        misleading = tf.fill((count, 1), REAL_LABEL)
        g_variables = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            generated = self._generate(latents, condition, training=True)
            g_loss = self.loss_fn(misleading, self._judge(generated, condition))
            g_scaled = self.generator_optimizer.scale_loss(g_loss)  # see kinds.precision
        self.generator_optimizer.apply(tape.gradient(g_scaled, g_variables), g_variables)
        return tf.stack([d_loss, g_loss])

    def _step_keys(self, key: tf.Tensor) -> tuple[tf.Tensor, list[tuple[tf.Tensor, tf.Tensor]]]:
        """The generator update's latent key and each discriminator update's (latents,
        label noise) keys. Rows 0 and 2 of the split are the first update's and row 1
        the generator's at every k (a split's first rows do not depend on how many it
        makes), so they draw the same numbers whatever k is."""
        split = tf.random.experimental.stateless_split(key, 1 + 2 * self.discriminator_steps)
        keys = tf.unstack(split)
        g_key = keys.pop(1)
        return g_key, list(zip(keys[0::2], keys[1::2], strict=True))

    def _discriminator_update(
        self,
        real: tf.Tensor,
        condition: tf.Tensor | None,
        latent_key: tf.Tensor,
        noise_key: tf.Tensor,
    ) -> tf.Tensor:
        """One discriminator update on the real batch and as many generated images; its
        loss."""
        count = tf.shape(real)[0]
        latents = tf.random.stateless_normal((count, self.latent_dim), seed=latent_key)
        images = tf.concat([self._generate(latents, condition, training=False), real], axis=0)
        both = None if condition is None else tf.concat([condition, condition], axis=0)
        targets = tf.concat(
            [tf.fill((count, 1), GENERATED_LABEL), tf.fill((count, 1), REAL_LABEL)], axis=0
        )
        targets += self.label_noise * tf.random.stateless_uniform(tf.shape(targets), seed=noise_key)
        d_variables = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(targets, self._judge(images, both))
            d_scaled = self.discriminator_optimizer.scale_loss(d_loss)
        self.discriminator_optimizer.apply(tape.gradient(d_scaled, d_variables), d_variables)
        return d_loss

    def _generate(
        self, latents: tf.Tensor, condition: tf.Tensor | None, *, training: bool
    ) -> tf.Tensor:
        inputs = latents if condition is None else [latents, condition]
        return self.generator(inputs, training=training)

    def _judge(self, images: tf.Tensor, condition: tf.Tensor | None) -> tf.Tensor:
        inputs = images if condition is None else [images, condition]
        return self.discriminator(inputs, training=True)
