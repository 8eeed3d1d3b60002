"""Conditional DCGAN networks: the dcgan kind's layers with a one-hot class input.

Generator: [latent (latent_dim,), label (classes,)] -> concatenated -> the dcgan
generator's dense start, stride-2 transposed convolutions and sigmoid output.
Discriminator: [image, label] -> the label tiled to (size, size, classes) and stacked on
the image's channels -> the dcgan discriminator's strided convolutions, dropout and
sigmoid output (probability that the image was generated).
"""

from __future__ import annotations

import keras
from keras import layers

from kinds.dcgan.model import (
    DENSE_FILTERS,
    DISCRIMINATOR_FILTERS,
    DROPOUT,
    GENERATOR_FILTERS,
    KERNEL_SIZE,
    LEAK,
    OUTPUT_KERNEL_SIZE,
    upsampling_plan,
)


def build_generator(image_size: int, channels: int, latent_dim: int, classes: int) -> keras.Model:
    """[latent, one-hot label] -> image (image_size, image_size, channels) in [0, 1]."""
    start, stages = upsampling_plan(image_size)
    latent = keras.Input(shape=(latent_dim,), name="latent")
    label = keras.Input(shape=(classes,), name="label")
    x = layers.Concatenate()([latent, label])
    x = layers.Dense(start * start * DENSE_FILTERS)(x)
    x = layers.Reshape((start, start, DENSE_FILTERS))(x)
    for filters in GENERATOR_FILTERS[:stages]:
        x = layers.Conv2DTranspose(filters, KERNEL_SIZE, strides=2, padding="same")(x)
        x = layers.LeakyReLU(negative_slope=LEAK)(x)
    image = layers.Conv2D(  # float32 output, also under mixed precision (kinds.precision)
        channels, OUTPUT_KERNEL_SIZE, padding="same", activation="sigmoid", dtype="float32"
    )(x)
    return keras.Model([latent, label], image, name="generator")


def build_discriminator(image_size: int, channels: int, classes: int) -> keras.Model:
    """[image, one-hot label] -> probability (batch, 1) that the image was generated."""
    _, stages = upsampling_plan(image_size)
    image = keras.Input(shape=(image_size, image_size, channels), name="image")
    label = keras.Input(shape=(classes,), name="label")
    label_map = layers.UpSampling2D(size=(image_size, image_size))(
        layers.Reshape((1, 1, classes))(label)
    )
    x = layers.Concatenate()([image, label_map])
    for filters in DISCRIMINATOR_FILTERS[:stages]:
        x = layers.Conv2D(filters, KERNEL_SIZE, strides=2, padding="same")(x)
        x = layers.LeakyReLU(negative_slope=LEAK)(x)
    x = layers.Dropout(DROPOUT)(layers.Flatten()(x))
    probability = layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    return keras.Model([image, label], probability, name="discriminator")
