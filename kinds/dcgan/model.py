"""DCGAN generator and discriminator, scaled from the 64x64 reference to other sizes.

The reference upsamples 8x8 -> 64x64 in three stride-2 stages (128, 256, 512 filters)
and the discriminator mirrors it with three stride-2 convolutions (64, 128, 128
filters). Other sizes keep the same layers with as many stride-2 stages as the size
allows: 28 -> 7x7 start and 2 stages, 32 -> 8x8 and 2, 64 -> 8x8 and 3, 128 -> 8x8 and 4.
"""

from __future__ import annotations

import keras
from keras import layers

KERNEL_SIZE = 4  # divisible by the stride, against checkerboard artefacts
OUTPUT_KERNEL_SIZE = 5
LEAK = 0.2
DROPOUT = 0.2
DENSE_FILTERS = 128  # channels of the generator's starting feature map
GENERATOR_FILTERS = (128, 256, 512, 512)  # per upsampling stage, from the start
DISCRIMINATOR_FILTERS = (64, 128, 128, 128)  # per downsampling stage, from the input
MIN_START, MAX_START, MIN_STAGES, MAX_STAGES = 4, 8, 2, 4


def upsampling_plan(image_size: int) -> tuple[int, int]:
    """(start side, number of stride-2 stages) so that start * 2**stages == image_size.

    Halves the size while it is even, stays >= 4, and is above 8 or fewer than two
    stages were taken; at most four stages. Any multiple of 4 from 16 works.
    """
    side, stages = image_size, 0
    while (
        side % 2 == 0
        and side // 2 >= MIN_START
        and stages < MAX_STAGES
        and (side > MAX_START or stages < MIN_STAGES)
    ):
        side, stages = side // 2, stages + 1
    if stages < MIN_STAGES:
        raise ValueError(f"image size {image_size} cannot be reached in two stride-2 stages")
    return side, stages


def build_generator(image_size: int, channels: int, latent_dim: int) -> keras.Model:
    """Latent vector (latent_dim,) -> image (image_size, image_size, channels) in [0, 1]."""
    start, stages = upsampling_plan(image_size)
    stack: list[layers.Layer] = [
        keras.Input(shape=(latent_dim,)),
        layers.Dense(start * start * DENSE_FILTERS),
        layers.Reshape((start, start, DENSE_FILTERS)),
    ]
    for filters in GENERATOR_FILTERS[:stages]:
        stack += [
            layers.Conv2DTranspose(filters, KERNEL_SIZE, strides=2, padding="same"),
            layers.LeakyReLU(negative_slope=LEAK),
        ]
    stack.append(  # float32 output, also under mixed precision (kinds.precision)
        layers.Conv2D(
            channels, OUTPUT_KERNEL_SIZE, padding="same", activation="sigmoid", dtype="float32"
        )
    )
    return keras.Sequential(stack, name="generator")


def build_discriminator(image_size: int, channels: int) -> keras.Model:
    """Image -> probability (batch, 1) that it was generated (generated=1, real=0)."""
    _, stages = upsampling_plan(image_size)
    stack: list[layers.Layer] = [keras.Input(shape=(image_size, image_size, channels))]
    for filters in DISCRIMINATOR_FILTERS[:stages]:
        stack += [
            layers.Conv2D(filters, KERNEL_SIZE, strides=2, padding="same"),
            layers.LeakyReLU(negative_slope=LEAK),
        ]
    stack += [
        layers.Flatten(),
        layers.Dropout(DROPOUT),
        layers.Dense(1, activation="sigmoid", dtype="float32"),  # float32: see the generator
    ]
    return keras.Sequential(stack, name="discriminator")
