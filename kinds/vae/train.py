"""Training of the vae kind. Imports TensorFlow: loaded by `run` only.

Quality metrics (kinds.quality): `fid` of images decoded from fixed latent vectors of
the prior N(0, I), after each epoch or every `quality_every` steps.

Reproducibility as in the dcgan kind: weights are drawn per variable from (seed,
network, index), the sampling layer's epsilon from a stateless generator keyed by
(seed, global step), the data order from (seed, epoch); checkpoints hold every weight
and optimizer slot, so a resumed run repeats the uninterrupted one exactly when op
determinism is on.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kinds.contract import JobContext
from kinds.images import grid_png
from kinds.quality.meter import sample_quality
from kinds.reproducibility import configure_randomness
from kinds.sampling import latent_grid, predict
from kinds.training import save_sample
from kinds.training_models import (
    OptimizerPlan,
    TrainingImages,
    TrainingModels,
    image_step_signature,
    train_on_images,
)
from kinds.vae import Spec
from kinds.vae.model import Sampler, build_decoder, build_encoder, vae_losses

METRICS = ("total_loss", "reconstruction_loss", "kl_loss")
GRID_PADDING = 0  # the latent grid is one continuous picture, as in the reference


def cache_key(spec: Spec) -> tuple[object, ...]:
    return ("vae", spec.image_size, spec.channels, spec.latent_dim, spec.mixed_precision)


class VaeModels(TrainingModels):
    """Encoder and decoder of one shape, trained together by one Adam."""

    def __init__(self, image_size: int, channels: int, latent_dim: int, mixed: bool) -> None:
        super().__init__(
            networks={
                "encoder": lambda: build_encoder(image_size, channels, latent_dim),
                "decoder": lambda: build_decoder(image_size, channels, latent_dim),
            },
            optimizers={"optimizer": OptimizerPlan(keras.optimizers.Adam, ("encoder", "decoder"))},
            signature=image_step_signature(image_size, channels),
            mixed=mixed,
        )
        self.encoder, self.decoder = self.networks["encoder"], self.networks["decoder"]
        self.optimizer = self.optimizers["optimizer"]
        self.variables = self.trained["optimizer"]
        self.sampler = Sampler()

    def _train_step(self, data: tf.Tensor, *batch: tf.Tensor) -> tf.Tensor:
        """One Adam step on a batch; returns [total_loss, reconstruction_loss, kl_loss]."""
        indices, key = batch
        images = tf.cast(tf.gather(data, indices), tf.float32) / 255.0
        with tf.GradientTape() as tape:
            z_mean, z_log_var = self.encoder(images, training=True)
            epsilon = tf.random.stateless_normal(tf.shape(z_mean), seed=key)
            reconstruction = self.decoder(self.sampler(z_mean, z_log_var, epsilon), training=True)
            reconstruction_loss, kl_loss = vae_losses(images, reconstruction, z_mean, z_log_var)
            total_loss = reconstruction_loss + kl_loss
            scaled = self.optimizer.scale_loss(total_loss)  # see kinds.precision
        self.optimizer.apply(tape.gradient(scaled, self.variables), self.variables)
        return tf.stack([total_loss, reconstruction_loss, kl_loss])


def train(spec: Spec, ctx: JobContext) -> None:
    configure_randomness(spec.seed, spec.deterministic)
    images = TrainingImages.load(spec)
    models = ctx.cache.get_or_build(
        cache_key(spec),
        lambda: VaeModels(spec.image_size, spec.channels, spec.latent_dim, spec.mixed_precision),
    )
    models.start_job(spec)
    grid = latent_grid(spec.grid_size, -spec.grid_range, spec.grid_range, spec.latent_dim)

    def save_grid(epoch: int, step: int) -> None:
        decoded = predict(models.decoder, grid)
        png = grid_png(decoded, columns=spec.grid_size, padding=GRID_PADDING)
        save_sample(ctx, png, epoch=epoch, step=step)

    quality = sample_quality(
        spec, ctx, images.tensors[0], lambda points, _: predict(models.decoder, points)
    )
    train_on_images(
        spec, ctx, models, images, metrics=METRICS, end_epoch=save_grid,
        final=("encoder", "decoder"), evaluate=quality.evaluate, evaluate_notes=quality.notes,
    )  # fmt: skip
