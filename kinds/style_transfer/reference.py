"""The reference's per-step computation, kept as written there: the content, style and
generated images go through VGG19 together at every step, and Keras' SGD with an
ExponentialDecay schedule updates the image. Imports TensorFlow.

The kind does not use this; tests check the kind's fast path against it, and
bench/bench_render.py measures both.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from kinds.style_transfer import CONTENT_LAYER, STYLE_LAYERS
from kinds.style_transfer.losses import (
    content_loss,
    gram_matrix,
    style_normaliser,
    total_variation_loss,
)


class ReferenceStyleTransfer:
    """Loss and SGD loop over a feature extractor giving every layer of `backbone` by name."""

    def __init__(
        self,
        backbone: keras.Model,
        height: int,
        width: int,
        *,
        content_weight: float = 2.5e-8,
        style_weight: float = 1e-6,
        total_variation_weight: float = 1e-6,
        content_layer: str = CONTENT_LAYER,
        style_layers: Sequence[str] = STYLE_LAYERS,
        compiled: bool = True,
    ) -> None:
        self.extractor = keras.Model(
            backbone.input, {layer.name: layer.output for layer in backbone.layers[1:]}
        )
        self.height, self.width = height, width
        self.weights = (content_weight, style_weight, total_variation_weight)
        self.content_layer, self.style_layers = content_layer, tuple(style_layers)
        # compiled=False runs eagerly: the same computation without a trace (quicker in tests).
        step = self._loss_and_grads
        self.loss_and_grads = tf.function(step) if compiled else step

    def loss(self, generated: tf.Tensor, content: tf.Tensor, style: tf.Tensor) -> tf.Tensor:
        content_weight, style_weight, total_variation_weight = self.weights
        features = self.extractor(tf.concat([content, style, generated], axis=0))
        loss = tf.zeros(())
        layer = features[self.content_layer]
        loss += content_weight * content_loss(layer[0], layer[2])
        normaliser = style_normaliser(self.height, self.width)
        for name in self.style_layers:
            layer = features[name]
            distance = tf.reduce_sum(tf.square(gram_matrix(layer[1]) - gram_matrix(layer[2])))
            loss += (style_weight / len(self.style_layers)) * (distance / normaliser)
        loss += total_variation_weight * total_variation_loss(generated, self.height, self.width)
        return loss

    def _loss_and_grads(
        self, generated: tf.Variable, content: tf.Tensor, style: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = self.loss(generated, content, style)
        return loss, tape.gradient(loss, generated)

    def run(
        self,
        content: np.ndarray,
        style: np.ndarray,
        iterations: int,
        *,
        learning_rate: float = 100.0,
        decay_steps: int = 100,
        decay_rate: float = 0.96,
    ) -> tuple[np.ndarray, list[float]]:
        """The reference loop from the content image: the final image and each step's loss."""
        schedule = keras.optimizers.schedules.ExponentialDecay(
            initial_learning_rate=learning_rate, decay_steps=decay_steps, decay_rate=decay_rate
        )
        optimizer = keras.optimizers.SGD(schedule)
        generated = tf.Variable(content)
        content_tensor, style_tensor = tf.constant(content), tf.constant(style)
        losses = []
        for _ in range(iterations):
            loss, grads = self.loss_and_grads(generated, content_tensor, style_tensor)
            optimizer.apply_gradients([(grads, generated)])
            losses.append(float(loss))
        return generated.numpy(), losses
