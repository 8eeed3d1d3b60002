"""Training of the dcgan kind. Imports TensorFlow: loaded by `run` only.

Quality metrics (kinds.quality): `fid` of images from fixed latent vectors, after each
epoch or every `quality_every` steps.

Reproducibility: every random number comes from the job seed. Weights are drawn per
variable from (seed, network, index); each step's latent vectors and label noise from
stateless ops keyed by (seed, global step); each epoch's data order from
(seed, epoch); dropout from the networks' seed-generator states, which the checkpoint
holds together with all weights, batch-normalisation statistics and optimizer slots. A
run resumed from any checkpoint therefore repeats the uninterrupted run exactly when op
determinism is on.
"""

from __future__ import annotations

import numpy as np

from kinds.contract import JobContext
from kinds.dcgan import Spec
from kinds.dcgan.model import NETWORKS
from kinds.gan import METRICS, GanModels
from kinds.images import grid_png
from kinds.quality.meter import sample_quality
from kinds.reproducibility import configure_randomness
from kinds.sampling import predict
from kinds.seeds import Stream
from kinds.training import save_sample
from kinds.training_models import TrainingImages, train_on_images


def cache_key(spec: Spec) -> tuple[object, ...]:
    """What the entry's networks, optimizers and traced step are built from (k unrolls
    into the step)."""
    shape = (spec.image_size, spec.channels, spec.latent_dim)
    step = (spec.beta_1, spec.discriminator_steps, spec.mixed_precision)
    return ("dcgan", spec.architecture, *shape, *step)


def build_models(spec: Spec) -> GanModels:
    size, channels, latent_dim = spec.image_size, spec.channels, spec.latent_dim
    build_generator, build_discriminator = NETWORKS[spec.architecture]
    return GanModels(
        lambda: build_generator(size, channels, latent_dim),
        lambda: build_discriminator(size, channels),
        image_size=size,
        channels=channels,
        latent_dim=latent_dim,
        classes=None,
        beta_1=spec.beta_1,
        discriminator_steps=spec.discriminator_steps,
        mixed=spec.mixed_precision,
    )


def sample_latents(spec: Spec) -> np.ndarray:
    """The fixed latent vectors of every epoch's grid."""
    rng = np.random.default_rng([spec.seed, Stream.SAMPLES])
    return rng.standard_normal((spec.samples, spec.latent_dim), np.float32)


def train(spec: Spec, ctx: JobContext) -> None:
    configure_randomness(spec.seed, spec.deterministic)
    images = TrainingImages.load(spec)
    models = ctx.cache.get_or_build(cache_key(spec), lambda: build_models(spec))
    models.start_job(spec)
    latents = sample_latents(spec)

    def save_grid(epoch: int, step: int) -> None:
        png = grid_png(predict(models.generator, latents))
        save_sample(ctx, png, epoch=epoch, step=step)

    quality = sample_quality(
        spec, ctx, images.tensors[0], lambda points, _: predict(models.generator, points)
    )
    train_on_images(
        spec, ctx, models, images, metrics=METRICS, end_epoch=save_grid, final=("generator",),
        evaluate=quality.evaluate, evaluate_notes=quality.notes,
    )  # fmt: skip
