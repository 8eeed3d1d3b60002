"""Pieces the image-to-image kinds share: the PatchGAN discriminator, the random jitter,
pixel scaling, the held-out split and inference on batch statistics. Imports
TensorFlow: loaded by the kinds' `run` only.

Both papers judge 70x70 patches with the same discriminator (pix2pix with batch
normalization on the concatenated input and target, CycleGAN with instance
normalization on one image); their generators end in tanh, so images are in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from kinds.contract import JobError
from kinds.keras_state import SEED_STATE_NAME, derive_seed
from kinds.translation import TranslationSpec

LEAK = 0.2
KERNEL = 4
PATCH_FILTERS = (64, 128, 256)  # the stride-2 stages, then 512 at stride 1
WEIGHT_STDDEV = 0.02  # both papers initialise every weight from N(0, 0.02)


def init() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(0.0, WEIGHT_STDDEV)


def normalization(kind: str) -> layers.Layer:
    """`batch` (pix2pix) or `instance` normalization (CycleGAN: a group per channel)."""
    if kind == "batch":
        return layers.BatchNormalization()
    return layers.GroupNormalization(groups=-1, epsilon=1e-5)


def patch_discriminator(
    image_size: int, input_channels: int, filters: int, norm: str
) -> keras.Model:
    """Image(s) -> a map of logits, one per overlapping patch (30x30 at 256 px, the 70x70
    receptive field of C64-C128-C256-C512). Below 32 px one stride-2 stage is left out,
    so that some patches remain."""
    stages = PATCH_FILTERS if image_size >= 32 else PATCH_FILTERS[:2]
    inputs = keras.Input((image_size, image_size, input_channels))
    x = inputs
    for index, width in enumerate(stages):
        x = layers.Conv2D(
            width * filters // 64, KERNEL, 2, "same", use_bias=False, kernel_initializer=init()
        )(x)
        if index > 0:  # none on the first, as both papers
            x = normalization(norm)(x)
        x = layers.LeakyReLU(LEAK)(x)
    x = layers.ZeroPadding2D()(x)
    x = layers.Conv2D(8 * filters, KERNEL, use_bias=False, kernel_initializer=init())(x)
    x = layers.LeakyReLU(LEAK)(normalization(norm)(x))
    x = layers.ZeroPadding2D()(x)
    logits = layers.Conv2D(1, KERNEL, kernel_initializer=init(), dtype="float32")(x)
    return keras.Model(inputs, logits, name="discriminator")


def to_model_range(pixels: tf.Tensor) -> tf.Tensor:
    """uint8 pixels to [-1, 1]."""
    return tf.cast(pixels, tf.float32) / 127.5 - 1.0


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """Model outputs in [-1, 1] to [0, 1], for grids and files."""
    return np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def jitter(images: tf.Tensor, size: int, key: tf.Tensor) -> tf.Tensor:
    """A random size x size crop of each (larger) image and a random mirror, drawn from
    `key`. Channels are cropped together, so an input and its target stacked on the
    channels stay aligned."""
    count = tf.shape(images)[0]
    keys = tf.random.experimental.stateless_split(key, count)

    def one(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        image, image_key = args
        crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(image_key, 2))
        shape = tf.stack([size, size, tf.shape(image)[-1]])
        cropped = tf.image.stateless_random_crop(image, shape, seed=crop_key)
        return tf.image.stateless_random_flip_left_right(cropped, seed=flip_key)

    return tf.map_fn(one, (images, keys), fn_output_signature=images.dtype)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 images to size x size (the held-out images, loaded at the jitter's size)."""
    if images.shape[1] == size:
        return images
    resized = tf.image.resize(images, (size, size), method="area")
    return np.asarray(tf.clip_by_value(tf.round(resized), 0, 255), np.uint8)


def hold_out(
    spec: TranslationSpec, sides: Sequence[np.ndarray], names: Sequence[str]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each side's training images (uint8, as loaded) and its last `held_out` images,
    never trained on, at the image size in [-1, 1]. A side with nothing left to train on
    is a JobError naming it (`names`: "pairs", "images in A"...)."""
    count = spec.held_out
    for name, side in zip(names, sides, strict=True):
        if len(side) <= count:
            raise JobError(
                "dataset_too_small",
                f"dataset {spec.dataset!r} has {len(side)} {name}; held_out takes {count} "
                "and training needs at least one more",
            )
    held = [to_model_range(resize(side[-count:], spec.image_size)).numpy() for side in sides]
    return [side[:-count] for side in sides], held


@contextmanager
def batch_statistics(model: keras.Model, seed: tuple[int, int]) -> Iterator[None]:
    """Run `model` in training mode for inference, as pix2pix does at test time (its
    batch normalization on the image's own statistics, its dropout as noise), with the
    dropout drawn from `seed`, and every non-trainable variable (moving statistics,
    dropout states) put back afterwards: inference leaves the training state as it was."""
    saved = [np.array(var.numpy()) for var in model.non_trainable_variables]
    for index, var in enumerate(model.non_trainable_variables):
        if var.name == SEED_STATE_NAME:
            state = [derive_seed(seed, index), 0]
            var.assign(np.array(state, dtype=np.dtype(var.dtype)))
    try:
        yield
    finally:
        for var, value in zip(model.non_trainable_variables, saved, strict=True):
            var.assign(value)


def translate_each(model: Any, images: np.ndarray, *, training: bool, seed: int = 0) -> np.ndarray:
    """model(image) for every image alone (a batch of one: its statistics are its own,
    whatever else is translated), float32 [-1, 1] in and out."""
    outputs = []
    for index, image in enumerate(images):
        batch = tf.convert_to_tensor(image[np.newaxis])
        if training:
            with batch_statistics(model, (seed, index)):
                outputs.append(np.asarray(model(batch, training=True)))
        else:
            outputs.append(np.asarray(model(batch, training=False)))
    return np.concatenate(outputs)
