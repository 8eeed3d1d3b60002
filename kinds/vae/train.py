"""Training loop of the vae kind. Imports TensorFlow: loaded by `run` only.

Reproducibility as in the dcgan kind: weights are drawn per variable from (seed,
network, index), the sampling layer's epsilon from a stateless generator keyed by
(seed, global step), the data order from (seed, epoch); checkpoints hold every weight
and optimizer slot, so a resumed run repeats the uninterrupted one exactly when op
determinism is on.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kinds import keras_state, precision
from kinds.contract import JobContext
from kinds.datasets import load_images
from kinds.images import grid_png
from kinds.reproducibility import configure_randomness
from kinds.sampling import latent_grid, predict
from kinds.training import EpochLoop, save_models
from kinds.vae import Spec
from kinds.vae.model import Sampler, build_decoder, build_encoder, vae_losses

# Second seed component of each use of the job seed (4 is the data order).
ENCODER_INIT, DECODER_INIT = 1, 2
METRICS = ("total_loss", "reconstruction_loss", "kl_loss")
GRID_PADDING = 0  # the latent grid is one continuous picture, as in the reference


def cache_key(spec: Spec) -> tuple[object, ...]:
    return ("vae", spec.image_size, spec.channels, spec.latent_dim, spec.mixed_precision)


class VaeModels:
    """Per-process cache entry for one shape: encoder, decoder, optimizer and the
    compiled train step (one trace per entry). `start_job` resets all state."""

    builds = 0

    def __init__(self, image_size: int, channels: int, latent_dim: int, mixed: bool) -> None:
        with precision.compute_policy(mixed):
            self.encoder = build_encoder(image_size, channels, latent_dim)
            self.decoder = build_decoder(image_size, channels, latent_dim)
        self.sampler = Sampler()
        self.variables = self.encoder.trainable_variables + self.decoder.trainable_variables
        self.optimizer = precision.optimizer(keras.optimizers.Adam(), mixed)
        self.optimizer.build(self.variables)
        self.state = keras_state.TrainingState(
            models={"encoder": self.encoder, "decoder": self.decoder},
            optimizers={"optimizer": (self.optimizer, self.variables)},
        )
        signature = [
            tf.TensorSpec([None, image_size, image_size, channels], tf.uint8),  # all images
            tf.TensorSpec([None], tf.int32),  # indices of this batch
            tf.TensorSpec([2], tf.int64),  # random key (seed, global step)
        ]
        self.train_step = tf.function(self._train_step, input_signature=signature)
        self.jobs = 0
        VaeModels.builds += 1

    @property
    def tracing_count(self) -> int:
        return self.train_step.experimental_get_tracing_count()

    def start_job(self, spec: Spec) -> None:
        keras_state.reinitialize(self.encoder, (spec.seed, ENCODER_INIT))
        keras_state.reinitialize(self.decoder, (spec.seed, DECODER_INIT))
        keras_state.reset_optimizer(self.optimizer, spec.learning_rate)
        self.jobs += 1

    def _train_step(self, data: tf.Tensor, indices: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
        """One Adam step on a batch; returns [total_loss, reconstruction_loss, kl_loss]."""
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
    images = load_images(spec.dataset, spec.image_size, seed=spec.seed, limit=spec.dataset_size)
    models = ctx.cache.get_or_build(
        cache_key(spec),
        lambda: VaeModels(spec.image_size, spec.channels, spec.latent_dim, spec.mixed_precision),
    )
    models.start_job(spec)
    data = tf.convert_to_tensor(images)
    grid = latent_grid(spec.grid_size, -spec.grid_range, spec.grid_range, spec.latent_dim)

    def train_step(indices: np.ndarray, key: np.ndarray) -> list[float]:
        return models.train_step(data, indices, key).numpy().tolist()

    def save_grid(epoch: int, step: int) -> None:
        decoded = predict(models.decoder, grid)
        png = grid_png(decoded, columns=spec.grid_size, padding=GRID_PADDING)
        name = f"epoch_{epoch:04d}.png"
        ctx.save_output("sample", name, png, epoch=epoch, step=step)

    loop = EpochLoop(
        spec,
        ctx,
        image_count=len(images),
        metrics=METRICS,
        train_step=train_step,
        state=models.state.arrays,
        load_state=models.state.load,
        end_epoch=save_grid,
    )
    del images  # `data` holds the pixels; don't keep a second copy
    step = loop.run()
    networks = {"encoder": models.encoder, "decoder": models.decoder}
    save_models(ctx, networks, epoch=spec.epochs, step=step)
