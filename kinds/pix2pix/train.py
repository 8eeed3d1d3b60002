"""Training of the pix2pix kind. Imports TensorFlow: loaded by `run` only.

Reproducibility as in the dcgan kind: weights per variable from (seed, network, index),
each step's jitter from stateless ops keyed by (seed, global step), the data order from
(seed, epoch), dropout from the generator's seed-generator state, which the checkpoint
holds with all weights and optimizer slots. The held-out grid and `val_l1` run on
batch statistics with their own dropout seed and leave the training state untouched.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from kinds.contract import JobContext
from kinds.image_pairs import load_pairs
from kinds.images import grid_png
from kinds.pix2pix import Spec
from kinds.pix2pix.model import build_discriminator, build_generator
from kinds.reproducibility import configure_randomness
from kinds.training import save_sample
from kinds.training_models import OptimizerPlan, TrainingImages, TrainingModels, train_on_images
from kinds.translation_nets import (
    hold_out,
    jitter,
    to_model_range,
    to_unit_range,
    translate_each,
)

METRICS = ("d_loss", "g_gan", "g_l1")


def cache_key(spec: Spec) -> tuple[object, ...]:
    shape = (spec.image_size, spec.load_size, spec.filters)
    return ("pix2pix", *shape, spec.beta_1, spec.mixed_precision)


class Pix2PixModels(TrainingModels):
    """Generator and discriminator of one shape, an Adam for each, the L1 weight."""

    def __init__(self, spec: Spec) -> None:
        size, filters = spec.image_size, spec.filters

        def adam() -> keras.optimizers.Optimizer:
            return keras.optimizers.Adam(beta_1=spec.beta_1)

        pixels = tf.TensorSpec([None, spec.load_size, spec.load_size, 3], tf.uint8)
        super().__init__(
            networks={
                "generator": lambda: build_generator(size, filters),
                "discriminator": lambda: build_discriminator(size, filters),
            },
            optimizers={
                "generator_optimizer": OptimizerPlan(adam, ("generator",)),
                "discriminator_optimizer": OptimizerPlan(adam, ("discriminator",)),
            },
            signature=[
                pixels,
                pixels,
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([2], tf.int64),
            ],
            mixed=spec.mixed_precision,
        )
        self.generator = self.networks["generator"]
        self.discriminator = self.networks["discriminator"]
        self.size, self.jittered = size, spec.load_size != size
        self.l1_weight = tf.Variable(0.0, trainable=False, name="l1_weight")
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    def configure(self, spec: Spec) -> None:
        self.l1_weight.assign(spec.l1_weight)

    def _train_step(
        self, sources: tf.Tensor, targets: tf.Tensor, indices: tf.Tensor, key: tf.Tensor
    ) -> tf.Tensor:
        """One update of both networks from one forward pass; returns [d_loss, g_gan, g_l1]."""
        pair = tf.concat([tf.gather(sources, indices), tf.gather(targets, indices)], axis=-1)
        if self.jittered:
            pair = jitter(pair, self.size, key)
        pair = to_model_range(pair)
        source, target = pair[..., :3], pair[..., 3:]
        g_optimizer = self.optimizers["generator_optimizer"]
        d_optimizer = self.optimizers["discriminator_optimizer"]
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            generated = self.generator(source, training=True)
            real = self.discriminator(tf.concat([source, target], -1), training=True)
            fake = self.discriminator(tf.concat([source, generated], -1), training=True)
            g_gan = self.loss_fn(tf.ones_like(fake), fake)
            g_l1 = tf.reduce_mean(tf.abs(target - tf.cast(generated, tf.float32)))
            g_loss = g_gan + self.l1_weight * g_l1
            d_loss = 0.5 * (
                self.loss_fn(tf.ones_like(real), real) + self.loss_fn(tf.zeros_like(fake), fake)
            )
            g_scaled, d_scaled = g_optimizer.scale_loss(g_loss), d_optimizer.scale_loss(d_loss)
        for optimizer, tape, scaled, name in (
            (g_optimizer, g_tape, g_scaled, "generator_optimizer"),
            (d_optimizer, d_tape, d_scaled, "discriminator_optimizer"),
        ):
            variables = self.trained[name]
            optimizer.apply(tape.gradient(scaled, variables), variables)
        return tf.stack([d_loss, g_gan, g_l1])


def load(spec: Spec) -> tuple[TrainingImages, np.ndarray, np.ndarray]:
    """The training pairs (input, target) at the load size, and the held-out inputs and
    targets at the image size, in [-1, 1]."""
    limit = spec.dataset_size + spec.held_out if spec.dataset_size else None
    sources, targets = load_pairs(spec.dataset, spec.load_size, seed=spec.seed, limit=limit)
    if spec.direction == "BtoA":
        sources, targets = targets, sources
    (train_sources, train_targets), held = hold_out(spec, (sources, targets), ("pairs",) * 2)
    images = TrainingImages(
        (tf.convert_to_tensor(train_sources), tf.convert_to_tensor(train_targets)),
        len(train_sources),
        spec.dataset,
        unit="pairs",
    )
    return images, held[0], held[1]


def train(spec: Spec, ctx: JobContext) -> None:
    configure_randomness(spec.seed, spec.deterministic)
    images, held_sources, held_targets = load(spec)
    models = ctx.cache.get_or_build(cache_key(spec), lambda: Pix2PixModels(spec))
    models.start_job(spec)
    translated: dict[int, np.ndarray] = {}

    def held_out_outputs() -> np.ndarray:
        """The held-out translations of the current weights, computed once for them (by
        `val_l1` or the grid, whichever comes first; the grid comes with quality off too)."""
        updates = int(models.optimizers["generator_optimizer"].iterations.numpy())
        if updates not in translated:
            translated.clear()
            translated[updates] = translate_each(
                models.generator, held_sources, training=True, seed=spec.seed
            )
        return translated[updates]

    def evaluate() -> Mapping[str, float]:
        return {"val_l1": float(np.mean(np.abs(held_out_outputs() - held_targets)))}

    def save_grid(epoch: int, step: int) -> None:
        rows = np.concatenate([held_sources, held_out_outputs(), held_targets])
        png = grid_png(to_unit_range(rows), columns=spec.held_out)
        save_sample(ctx, png, epoch=epoch, step=step)

    train_on_images(
        spec, ctx, models, images, metrics=METRICS, end_epoch=save_grid, final=("generator",),
        evaluate=evaluate,
    )  # fmt: skip
