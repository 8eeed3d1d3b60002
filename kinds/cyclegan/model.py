"""The CycleGAN ResNet generator (the paper's c7s1-64, d128, d256, R256 x blocks, u128,
u64, c7s1-3) with reflection padding and instance normalization. Its discriminators are
kinds.translation_nets' PatchGAN on one image.

`ReflectionPad` is registered with Keras, so a saved generator loads wherever this
module has been imported (kinds.translate imports it before loading).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from kinds.translation_nets import init, normalization, patch_discriminator


@keras.saving.register_keras_serializable(package="atelier")
class ReflectionPad(layers.Layer):
    """Pads height and width by mirroring the border (no dark frame from zero padding)."""

    def __init__(self, padding: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.padding = padding

    def call(self, inputs: Any) -> Any:
        pad = self.padding
        return keras.ops.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="reflect")

    def compute_output_shape(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
        def grown(side: int | None) -> int | None:
            return None if side is None else side + 2 * self.padding

        return (shape[0], grown(shape[1]), grown(shape[2]), shape[3])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding}


def _conv(x: Any, filters: int, kernel: int, *, strides: int = 1, relu: bool = True) -> Any:
    """A reflection-padded (stride 1) or zero-padded (stride 2) convolution, instance norm, ReLU."""
    if strides == 1 and kernel > 1:
        x = ReflectionPad(kernel // 2)(x)
    padding = "valid" if strides == 1 else "same"
    x = layers.Conv2D(filters, kernel, strides, padding, use_bias=False, kernel_initializer=init())(
        x
    )
    x = normalization("instance")(x)
    return layers.ReLU()(x) if relu else x


def build_generator(
    image_size: int, blocks: int, filters: int = 64, name: str = "generator"
) -> keras.Model:
    """Image (size, size, 3) in [-1, 1] -> image of the other domain in [-1, 1]."""
    inputs = keras.Input((image_size, image_size, 3))
    x = _conv(inputs, filters, 7)
    x = _conv(x, 2 * filters, 3, strides=2)
    x = _conv(x, 4 * filters, 3, strides=2)
    for _ in range(blocks):
        residual = _conv(_conv(x, 4 * filters, 3), 4 * filters, 3, relu=False)
        x = layers.Add()([x, residual])
    for width in (2 * filters, filters):
        x = layers.Conv2DTranspose(width, 3, 2, "same", use_bias=False, kernel_initializer=init())(
            x
        )
        x = layers.ReLU()(normalization("instance")(x))
    x = ReflectionPad(3)(x)
    image = layers.Conv2D(3, 7, activation="tanh", kernel_initializer=init(), dtype="float32")(x)
    return keras.Model(inputs, image, name=name)


def build_discriminator(
    image_size: int, filters: int = 64, name: str = "discriminator"
) -> keras.Model:
    """One image -> patch scores (least squares: real towards 1, generated towards 0)."""
    model = patch_discriminator(image_size, 3, filters, "instance")
    model.name = name
    return model
