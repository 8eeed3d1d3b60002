"""The reference's three losses, with its exact normalisations. Imports TensorFlow.

Images are in VGG19's preprocessed space (BGR, ImageNet means subtracted), shaped
(1, height, width, 3); features are one image's activations (rows, columns, channels).
"""

from __future__ import annotations

import tensorflow as tf

STYLE_CHANNELS = 3  # the reference normalises every style layer by 3**2, not its depth
TOTAL_VARIATION_POWER = 1.25


def content_loss(target: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    """Sum of squared differences of the content layer's activations."""
    return tf.reduce_sum(tf.square(features - target))


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """Channels x channels inner products of a (rows, columns, channels) activation map."""
    by_channel = tf.transpose(features, (2, 0, 1))
    flat = tf.reshape(by_channel, (tf.shape(by_channel)[0], -1))
    return tf.matmul(flat, tf.transpose(flat))


def style_normaliser(height: int, width: int) -> float:
    """4 * 3**2 * (height * width)**2 for every style layer, whatever its size and depth
    (the reference's constant; Gatys et al. use the layer's own size and depth)."""
    pixels = height * width
    return 4.0 * (STYLE_CHANNELS**2) * (pixels**2)


def style_loss(target_gram: tf.Tensor, features: tf.Tensor, normaliser: float) -> tf.Tensor:
    """Squared Gram-matrix distance between a style target and the generated image."""
    return tf.reduce_sum(tf.square(target_gram - gram_matrix(features))) / normaliser


def total_variation_loss(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """sum((dy**2 + dx**2) ** 1.25) over all pixels but the last row and column."""
    corner = image[:, : height - 1, : width - 1, :]
    down = tf.square(corner - image[:, 1:, : width - 1, :])
    right = tf.square(corner - image[:, : height - 1, 1:, :])
    return tf.reduce_sum(tf.pow(down + right, TOTAL_VARIATION_POWER))
