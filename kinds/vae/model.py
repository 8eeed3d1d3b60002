"""VAE encoder and decoder of the reference (MNIST, 28x28), for any multiple of 4.

Encoder: two stride-2 3x3 convolutions (32, 64 filters, ReLU), a 16-unit ReLU dense layer
and two dense heads, `z_mean` and `z_log_var`. Decoder: a ReLU dense layer to a
(size/4, size/4, 64) map, two stride-2 3x3 transposed convolutions (64, 32 filters, ReLU)
and a 3x3 sigmoid convolution to the image. Both are plain functional models: saved as
.keras they load anywhere without custom objects.
"""

from __future__ import annotations

import keras
from keras import layers

ENCODER_FILTERS = (32, 64)
DECODER_FILTERS = (64, 32)
KERNEL_SIZE = 3
HIDDEN_UNITS = 16
START_FILTERS = 64
DOWNSAMPLING = 4  # two stride-2 stages


def build_encoder(image_size: int, channels: int, latent_dim: int) -> keras.Model:
    """Image (size, size, channels) in [0, 1] -> [z_mean, z_log_var], each (latent_dim,)."""
    images = keras.Input(shape=(image_size, image_size, channels), name="image")
    x = images
    for filters in ENCODER_FILTERS:
        x = layers.Conv2D(filters, KERNEL_SIZE, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(HIDDEN_UNITS, activation="relu")(x)
    # float32 outputs, also under mixed precision (kinds.precision): exp(z_log_var)
    z_mean = layers.Dense(latent_dim, name="z_mean", dtype="float32")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var", dtype="float32")(x)
    return keras.Model(images, [z_mean, z_log_var], name="encoder")


def build_decoder(image_size: int, channels: int, latent_dim: int) -> keras.Model:
    """Latent point (latent_dim,) -> image (size, size, channels) in [0, 1]."""
    start = image_size // DOWNSAMPLING
    latents = keras.Input(shape=(latent_dim,), name="latent")
    x = layers.Dense(start * start * START_FILTERS, activation="relu")(latents)
    x = layers.Reshape((start, start, START_FILTERS))(x)
    for filters in DECODER_FILTERS:
        x = layers.Conv2DTranspose(
            filters, KERNEL_SIZE, strides=2, padding="same", activation="relu"
        )(x)
    images = layers.Conv2D(  # float32 output, also under mixed precision
        channels, KERNEL_SIZE, padding="same", activation="sigmoid", dtype="float32"
    )(x)
    return keras.Model(latents, images, name="decoder")


class Sampler(layers.Layer):
    """The sampling layer: z = z_mean + exp(z_log_var / 2) * epsilon, with epsilon given
    (the train step draws it from a stateless generator keyed by seed and step)."""

    def call(self, z_mean, z_log_var, epsilon):  # type: ignore[no-untyped-def]
        return z_mean + keras.ops.exp(0.5 * z_log_var) * epsilon


def vae_losses(images, reconstruction, z_mean, z_log_var):  # type: ignore[no-untyped-def]
    """(reconstruction, kl) per batch: binary cross-entropy summed over the pixels (mean
    over channels, as Keras' binary_crossentropy does), and the KL divergence of
    N(z_mean, exp(z_log_var)) from N(0, 1) summed over the latent dimensions; both
    averaged over the batch."""
    ops = keras.ops
    pixel_losses = keras.losses.binary_crossentropy(images, reconstruction)
    reconstruction_loss = ops.mean(ops.sum(pixel_losses, axis=(1, 2)))
    kl = -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
    kl_loss = ops.mean(ops.sum(kl, axis=1))
    return reconstruction_loss, kl_loss
