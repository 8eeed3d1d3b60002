"""Training of the cyclegan kind. Imports TensorFlow: loaded by `run` only.

Reproducibility as in the dcgan kind: weights per variable from (seed, network, index);
each step's jitter, B images and pool draws from stateless ops keyed by (seed, global
step); the data order from (seed, epoch). The image pools are variables of the cache
entry, emptied per job and held by every checkpoint, and the learning rate is a
function of the global step: a resumed run goes on exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from kinds.contract import JobContext
from kinds.cyclegan import Spec
from kinds.cyclegan.model import build_discriminator, build_generator
from kinds.image_pairs import load_unpaired
from kinds.images import grid_png
from kinds.reproducibility import configure_randomness
from kinds.sampling import predict
from kinds.training import save_sample, steps_per_epoch
from kinds.training_models import OptimizerPlan, TrainingImages, TrainingModels, train_on_images
from kinds.translation_nets import hold_out, jitter, to_model_range, to_unit_range

METRICS = ("g_loss", "f_loss", "d_a_loss", "d_b_loss", "cycle_loss", "identity_loss")
GENERATORS = ("generator_ab", "generator_ba")


def cache_key(spec: Spec) -> tuple[object, ...]:
    shape = (spec.image_size, spec.load_size, spec.filters, spec.blocks, spec.pool_size)
    return ("cyclegan", *shape, spec.beta_1, spec.mixed_precision)


class ImagePool:
    """The last `capacity` generated images a discriminator is shown (the paper's
    history buffer): while filling, each image is kept and shown; once full, each image
    is shown as it is or, with probability one half, swapped for a kept one at random."""

    def __init__(self, capacity: int, size: int, name: str) -> None:
        self.capacity = capacity
        shape = (max(capacity, 1), size, size, 3)
        self.images = tf.Variable(tf.zeros(shape), trainable=False, name=f"{name}_images")
        self.count = tf.Variable(0, trainable=False, name=f"{name}_count")

    @property
    def variables(self) -> list[tf.Variable]:
        return [self.images, self.count]

    def reset(self) -> None:
        self.images.assign(tf.zeros_like(self.images))
        self.count.assign(0)

    def query(self, generated: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        if self.capacity == 0:
            return generated
        count = tf.shape(generated)[0]
        keys = tf.random.experimental.stateless_split(key, count)
        shown = tf.TensorArray(tf.float32, size=count)
        for index in tf.range(count):
            shown = shown.write(index, self._exchange(generated[index], keys[index]))
        return shown.stack()

    def _exchange(self, image: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        coin_key, slot_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        filling = self.count < self.capacity
        swap = tf.logical_and(
            tf.logical_not(filling), tf.random.stateless_uniform([], coin_key) < 0.5
        )
        drawn = tf.random.stateless_uniform([], slot_key, 0, self.capacity, tf.int32)
        slot = tf.where(filling, self.count, drawn)
        kept = self.images[slot]
        stored = tf.where(tf.logical_or(filling, swap), image, kept)
        self.images.scatter_nd_update([[slot]], stored[tf.newaxis])
        self.count.assign_add(tf.cast(filling, tf.int32))
        return tf.where(swap, kept, image)


class CycleGanModels(TrainingModels):
    """Both generators and discriminators of one shape, an Adam for each, the pools,
    the loss weights and the learning-rate schedule."""

    def __init__(self, spec: Spec) -> None:
        size, filters, blocks = spec.image_size, spec.filters, spec.blocks
        self.pools = {side: ImagePool(spec.pool_size, size, f"pool_{side}") for side in "ab"}

        def adam() -> keras.optimizers.Optimizer:
            return keras.optimizers.Adam(beta_1=spec.beta_1)

        networks = {
            **{name: _generator(size, blocks, filters, name) for name in GENERATORS},
            **{f"discriminator_{side}": _discriminator(size, filters, side) for side in "ab"},
        }
        pixels = tf.TensorSpec([None, spec.load_size, spec.load_size, 3], tf.uint8)
        super().__init__(
            networks=networks,
            optimizers={f"{name}_optimizer": OptimizerPlan(adam, (name,)) for name in networks},
            signature=[
                pixels,
                pixels,
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([2], tf.int64),
            ],
            mixed=spec.mixed_precision,
            variables={f"pool_{side}": pool.variables for side, pool in self.pools.items()},
        )
        self.size, self.jittered = size, spec.load_size != size
        self.cycle_weight = tf.Variable(0.0, trainable=False, name="cycle_weight")
        self.identity_weight = tf.Variable(0.0, trainable=False, name="identity_weight")
        self.base_rate = tf.Variable(0.0, trainable=False, name="base_learning_rate")
        self.decay_start = tf.Variable(0, dtype=tf.int64, trainable=False, name="decay_start")
        self.total_steps = tf.Variable(1, dtype=tf.int64, trainable=False, name="total_steps")

    def configure(self, spec: Spec) -> None:
        self.cycle_weight.assign(spec.cycle_weight)
        self.identity_weight.assign(spec.identity_weight * spec.cycle_weight)
        self.base_rate.assign(spec.learning_rate)
        for pool in self.pools.values():
            pool.reset()

    def schedule(self, epochs: int, steps: int) -> None:
        """Constant rate for the first half of the epochs, then linearly to zero."""
        self.decay_start.assign((epochs // 2) * steps)
        self.total_steps.assign(epochs * steps)

    def _rate(self, step: tf.Tensor) -> tf.Tensor:
        remaining = tf.cast(self.total_steps - step, tf.float32)
        decaying = tf.cast(self.total_steps - self.decay_start, tf.float32)
        factor = tf.where(step < self.decay_start, 1.0, remaining / decaying)
        return self.base_rate * factor

    def _train_step(
        self, images_a: tf.Tensor, images_b: tf.Tensor, indices: tf.Tensor, key: tf.Tensor
    ) -> tf.Tensor:
        """One update of all four networks; returns the METRICS."""
        keys = tf.unstack(tf.random.experimental.stateless_split(key, 5))
        count = tf.shape(indices)[0]
        drawn = tf.random.stateless_uniform([count], keys[0], 0, tf.shape(images_b)[0], tf.int32)
        real_a = tf.gather(images_a, indices % tf.shape(images_a)[0])
        real_b = tf.gather(images_b, drawn)
        if self.jittered:
            real_a, real_b = jitter(real_a, self.size, keys[1]), jitter(real_b, self.size, keys[2])
        real_a, real_b = to_model_range(real_a), to_model_range(real_b)
        rate = self._rate(key[1])
        for optimizer in self.optimizers.values():
            optimizer.learning_rate.assign(rate)

        g, f = (self.networks[name] for name in GENERATORS)
        d_a, d_b = self.networks["discriminator_a"], self.networks["discriminator_b"]
        with tf.GradientTape(persistent=True) as tape:
            fake_b, fake_a = g(real_a, training=True), f(real_b, training=True)
            cycle = _l1(real_a, f(fake_b, training=True)) + _l1(real_b, g(fake_a, training=True))
            identity = _l1(real_b, g(real_b, training=True)) + _l1(real_a, f(real_a, training=True))
            g_adversarial = _least_squares(d_b(fake_b, training=True), 1.0)
            f_adversarial = _least_squares(d_a(fake_a, training=True), 1.0)
            # Both generators minimise the paper's joint objective.
            generators = (
                g_adversarial
                + f_adversarial
                + self.cycle_weight * cycle
                + self.identity_weight * identity
            )
            pooled_a = self.pools["a"].query(tf.stop_gradient(fake_a), keys[3])
            pooled_b = self.pools["b"].query(tf.stop_gradient(fake_b), keys[4])
            d_a_loss = _discriminator_loss(d_a, real_a, pooled_a)
            d_b_loss = _discriminator_loss(d_b, real_b, pooled_b)
            losses = {
                "generator_ab": generators,
                "generator_ba": generators,
                "discriminator_a": d_a_loss,
                "discriminator_b": d_b_loss,
            }
            scaled = {
                name: self.optimizers[f"{name}_optimizer"].scale_loss(loss)
                for name, loss in losses.items()
            }
        for name in losses:
            optimizer_name = f"{name}_optimizer"
            variables = self.trained[optimizer_name]
            gradients = tape.gradient(scaled[name], variables)
            self.optimizers[optimizer_name].apply(gradients, variables)
        del tape
        return tf.stack(
            [g_adversarial, f_adversarial, d_a_loss, d_b_loss, cycle / 2.0, identity / 2.0]
        )


def _generator(size: int, blocks: int, filters: int, name: str) -> Callable[[], keras.Model]:
    return lambda: build_generator(size, blocks, filters, name)


def _discriminator(size: int, filters: int, side: str) -> Callable[[], keras.Model]:
    return lambda: build_discriminator(size, filters, f"discriminator_{side}")


def _l1(real: tf.Tensor, made: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.abs(real - tf.cast(made, tf.float32)))


def _least_squares(scores: tf.Tensor, target: float) -> tf.Tensor:
    return tf.reduce_mean(tf.square(tf.cast(scores, tf.float32) - target))


def _discriminator_loss(judge: keras.Model, real: tf.Tensor, generated: tf.Tensor) -> tf.Tensor:
    """Halved, as in the paper, to slow the discriminator relative to the generators."""
    real_loss = _least_squares(judge(real, training=True), 1.0)
    return 0.5 * (real_loss + _least_squares(judge(generated, training=True), 0.0))


def load(spec: Spec) -> tuple[TrainingImages, np.ndarray, np.ndarray]:
    """The training images of both sides at the load size, and each side's held-out
    images at the image size, in [-1, 1]."""
    limit = spec.dataset_size + spec.held_out if spec.dataset_size else None
    sides = load_unpaired(spec.dataset, spec.load_size, seed=spec.seed, limit=limit)
    (train_a, train_b), held = hold_out(spec, sides, ("images in A", "images in B"))
    images = TrainingImages(
        (tf.convert_to_tensor(train_a), tf.convert_to_tensor(train_b)),
        max(len(train_a), len(train_b)),
        spec.dataset,
    )
    return images, held[0], held[1]


def train(spec: Spec, ctx: JobContext) -> None:
    configure_randomness(spec.seed, spec.deterministic)
    images, held_a, held_b = load(spec)
    models = ctx.cache.get_or_build(cache_key(spec), lambda: CycleGanModels(spec))
    models.start_job(spec)
    models.schedule(spec.epochs, steps_per_epoch(spec, images.rows))
    g, f = (models.networks[name] for name in GENERATORS)

    def save_grid(epoch: int, step: int) -> None:
        # Batched: instance normalization makes each image's output its own.
        fake_b, fake_a = predict(g, held_a), predict(f, held_b)
        rows = [held_a, fake_b, predict(f, fake_b), held_b, fake_a, predict(g, fake_a)]
        png = grid_png(to_unit_range(np.concatenate(rows)), columns=spec.held_out)
        save_sample(ctx, png, epoch=epoch, step=step)

    train_on_images(
        spec, ctx, models, images, metrics=METRICS, end_epoch=save_grid, final=GENERATORS
    )
