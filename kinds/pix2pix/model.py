"""The pix2pix U-Net generator. Its discriminator is kinds.translation_nets'
PatchGAN on the input and the target stacked on the channels.

At 256 px the generator halves the image eight times (64, 128, 256, 512, 512, 512, 512,
512 filters) to 1x1 and doubles it back seven times (512, 512, 512, 512, 256, 128, 64,
each concatenated with the encoder's output of the same size), then a last transposed
convolution to the image. Smaller images take as many halvings as reach 1x1 (six at
64 px), keeping the outermost layers: the filters of the innermost are dropped.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from kinds.translation_nets import KERNEL, LEAK, init, patch_discriminator

DOWN_FILTERS = (64, 128, 256, 512, 512, 512, 512, 512)  # at 256 px, from the input
DROPOUT = 0.5
DROPOUT_BLOCKS = 3  # the first (innermost) upsampling blocks


def down_filters(image_size: int, filters: int) -> list[int]:
    """The encoder's filters: one block per halving down to 1x1."""
    halvings = round(math.log2(image_size))
    if 2**halvings != image_size:
        raise ValueError(f"a U-Net needs a power of two for its side, not {image_size}")
    widths = DOWN_FILTERS[: halvings - 1] + DOWN_FILTERS[-1:]  # keep the 1x1 bottleneck's
    return [width * filters // 64 for width in widths]


def build_generator(image_size: int, filters: int = 64) -> keras.Model:
    """Image (size, size, 3) in [-1, 1] -> image in [-1, 1]."""
    widths = down_filters(image_size, filters)
    inputs = keras.Input((image_size, image_size, 3))
    x, skips = inputs, []
    for index, width in enumerate(widths):
        x = layers.Conv2D(width, KERNEL, 2, "same", use_bias=False, kernel_initializer=init())(x)
        if index > 0:
            x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(LEAK)(x)
        skips.append(x)
    for index, (width, skip) in enumerate(zip(widths[-2::-1], skips[-2::-1], strict=True)):
        x = layers.Conv2DTranspose(
            width, KERNEL, 2, "same", use_bias=False, kernel_initializer=init()
        )(x)
        x = layers.BatchNormalization()(x)
        if index < DROPOUT_BLOCKS:
            x = layers.Dropout(DROPOUT)(x)
        x = layers.Concatenate()([layers.ReLU()(x), skip])
    image = layers.Conv2DTranspose(
        3, KERNEL, 2, "same", activation="tanh", kernel_initializer=init(), dtype="float32"
    )(x)
    return keras.Model(inputs, image, name="generator")


def build_discriminator(image_size: int, filters: int = 64) -> keras.Model:
    """[input, target or generated] stacked on the channels (6) -> patch logits."""
    return patch_discriminator(image_size, 6, filters, "batch")
