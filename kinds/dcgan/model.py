"""The dcgan kind's networks, one generator and discriminator pair per architecture.

`dcgan`: the Keras DCGAN, scaled from its 64x64 reference to other sizes. The reference
upsamples 8x8 -> 64x64 in three stride-2 stages (128, 256, 512 filters) and the
discriminator mirrors it with three stride-2 convolutions (64, 128, 128 filters). Other
sizes keep the same layers with as many stride-2 stages as the size allows: 28 -> 7x7
start and 2 stages, 32 -> 8x8 and 2, 64 -> 8x8 and 3, 128 -> 8x8 and 4.

`upsample` starts from (size/4)^2 (7x7 at 28 px, as its text) and doubles twice; its
discriminator halves three times. `mlp` works on the flattened pixels at any size, its
layers started as the text's PyTorch ones.
Every generator emits [0, 1]; every output layer is float32, also under mixed
precision (kinds.precision).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from kinds.dcgan import DCGAN, MLP, UPSAMPLE

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
    stack.append(image_output(channels))
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
        probability_output(),
    ]
    return keras.Sequential(stack, name="discriminator")


def image_output(channels: int) -> layers.Layer:
    """A generator's last layer: sigmoid pixels in float32 (kinds.precision)."""
    return layers.Conv2D(
        channels, OUTPUT_KERNEL_SIZE, padding="same", activation="sigmoid", dtype="float32"
    )


def probability_output() -> layers.Layer:
    """A discriminator's last layer: the probability of "generated", in float32."""
    return layers.Dense(1, activation="sigmoid", dtype="float32")


# --- upsample ---------------------------------------------------------------------------

UPSAMPLE_KERNEL_SIZE = 5
UPSAMPLE_DROPOUT = 0.4
UPSAMPLE_LEAK = 0.3  # Keras' LeakyReLU default, which its text takes
BATCH_NORM_MOMENTUM = 0.9
UPSAMPLE_DENSE_FILTERS = 64  # channels of the generator's starting feature map
UPSAMPLE_GENERATOR_FILTERS = (32, 16)  # one per doubling
UPSAMPLE_DISCRIMINATOR_FILTERS = (64, 128, 256)  # one per stride-2 halving


def normalised() -> list[layers.Layer]:
    """What follows each dense or transposed convolution of the upsample generator."""
    return [
        layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM),
        layers.LeakyReLU(negative_slope=UPSAMPLE_LEAK),
    ]


def build_upsample_generator(image_size: int, channels: int, latent_dim: int) -> keras.Model:
    """Latent -> (size/4)^2 x 64 map, dropout -> two (UpSampling2D, 5x5 transposed
    convolution) stages -> sigmoid 5x5 convolution; the dense layer and each transposed
    convolution followed by batch normalisation and LeakyReLU."""
    start = image_size // 2 ** len(UPSAMPLE_GENERATOR_FILTERS)
    stack: list[layers.Layer] = [
        keras.Input(shape=(latent_dim,)),
        layers.Dense(start * start * UPSAMPLE_DENSE_FILTERS),
        *normalised(),
        layers.Reshape((start, start, UPSAMPLE_DENSE_FILTERS)),
        layers.Dropout(UPSAMPLE_DROPOUT),
    ]
    for filters in UPSAMPLE_GENERATOR_FILTERS:
        stack += [
            layers.UpSampling2D(),
            layers.Conv2DTranspose(filters, UPSAMPLE_KERNEL_SIZE, padding="same"),
            *normalised(),
        ]
    stack.append(image_output(channels))
    return keras.Sequential(stack, name="generator")


def build_upsample_discriminator(image_size: int, channels: int) -> keras.Model:
    """Image -> three 5x5 stride-2 ReLU convolutions, each followed by dropout -> sigmoid."""
    stack: list[layers.Layer] = [keras.Input(shape=(image_size, image_size, channels))]
    for filters in UPSAMPLE_DISCRIMINATOR_FILTERS:
        stack += [
            layers.Conv2D(
                filters, UPSAMPLE_KERNEL_SIZE, strides=2, padding="same", activation="relu"
            ),
            layers.Dropout(UPSAMPLE_DROPOUT),
        ]
    stack += [layers.Flatten(), probability_output()]
    return keras.Sequential(stack, name="discriminator")


# --- mlp --------------------------------------------------------------------------------

MLP_GENERATOR_UNITS = (256, 512, 1024)
MLP_DISCRIMINATOR_UNITS = (1024, 512, 256)
MLP_DROPOUT = 0.3


def linear(units: int, fan_in: int, **options: Any) -> layers.Dense:
    """A Dense layer started as the text's PyTorch nn.Linear: weights and biases uniform in
    +-1/sqrt(fan_in). From Keras' Glorot start, or on [0, 1] pixels, the discriminator
    wins within a few epochs of glyphs and the generator collapses to one image."""
    bound = 1 / math.sqrt(fan_in)
    return layers.Dense(
        units,
        kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound),
        **options,
    )


def build_mlp_generator(image_size: int, channels: int, latent_dim: int) -> keras.Model:
    """Latent -> Dense 256, 512, 1024 with LeakyReLU -> tanh pixels mapped to [0, 1]."""
    shape = (image_size, image_size, channels)
    stack: list[layers.Layer] = [keras.Input(shape=(latent_dim,))]
    fan_in = latent_dim
    for units in MLP_GENERATOR_UNITS:
        stack += [linear(units, fan_in), layers.LeakyReLU(negative_slope=LEAK)]
        fan_in = units
    stack += [
        linear(math.prod(shape), fan_in, activation="tanh", dtype="float32"),
        # tanh's [-1, 1] to the [0, 1] every generator emits (the discriminator maps
        # images back to [-1, 1], the text's data range)
        layers.Rescaling(0.5, offset=0.5, dtype="float32"),
        layers.Reshape(shape, dtype="float32"),
    ]
    return keras.Sequential(stack, name="generator")


def build_mlp_discriminator(image_size: int, channels: int) -> keras.Model:
    """Flattened image in [-1, 1] -> Dense 1024, 512, 256 with LeakyReLU and dropout ->
    sigmoid."""
    stack: list[layers.Layer] = [
        keras.Input(shape=(image_size, image_size, channels)),
        layers.Flatten(),
        layers.Rescaling(2.0, offset=-1.0),  # [0, 1] to the text's data range [-1, 1]
    ]
    fan_in = image_size * image_size * channels
    for units in MLP_DISCRIMINATOR_UNITS:
        stack += [
            linear(units, fan_in),
            layers.LeakyReLU(negative_slope=LEAK),
            layers.Dropout(MLP_DROPOUT),
        ]
        fan_in = units
    stack.append(linear(1, fan_in, activation="sigmoid", dtype="float32"))  # kinds.precision
    return keras.Sequential(stack, name="discriminator")


GeneratorBuilder = Callable[[int, int, int], keras.Model]
"""(image_size, channels, latent_dim) -> generator."""
DiscriminatorBuilder = Callable[[int, int], keras.Model]
"""(image_size, channels) -> discriminator."""

NETWORKS: dict[str, tuple[GeneratorBuilder, DiscriminatorBuilder]] = {
    DCGAN: (build_generator, build_discriminator),
    UPSAMPLE: (build_upsample_generator, build_upsample_discriminator),
    MLP: (build_mlp_generator, build_mlp_discriminator),
}
"""Architecture -> its builders."""
