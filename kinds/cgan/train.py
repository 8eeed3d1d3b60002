"""Training of the cgan kind. Imports TensorFlow: loaded by `run` only.

Quality metrics (kinds.quality), after each epoch or every `quality_every` steps: `fid`
of images from fixed latent vectors with the classes cycling evenly, and on the digit
datasets (glyphs, mnist: the classes the glyph classifier reads) `label_accuracy`, the
share of them read as the class they were generated for (chance: 0.1).

Reproducibility as in the dcgan kind: weights per variable from (seed, network, index),
each step's latent vectors and label noise from stateless ops keyed by (seed, global
step), the data order from (seed, epoch), dropout from the discriminator's
seed-generator state, which the checkpoint holds with all weights and optimizer slots.
"""

from __future__ import annotations

import numpy as np

from kinds.cgan import Spec
from kinds.cgan.model import build_discriminator, build_generator
from kinds.contract import JobContext
from kinds.gan import METRICS, GanModels
from kinds.images import grid_png
from kinds.quality.meter import sample_quality
from kinds.reproducibility import configure_randomness
from kinds.sampling import predict
from kinds.seeds import Stream
from kinds.training import save_sample
from kinds.training_models import TrainingImages, train_on_images


def cache_key(spec: Spec) -> tuple[object, ...]:
    return (
        "cgan",
        spec.image_size,
        spec.channels,
        spec.latent_dim,
        spec.classes,
        spec.beta_1,
        spec.mixed_precision,
    )


def build_models(spec: Spec) -> GanModels:
    size, channels, classes = spec.image_size, spec.channels, spec.classes
    return GanModels(
        lambda: build_generator(size, channels, spec.latent_dim, classes),
        lambda: build_discriminator(size, channels, classes),
        image_size=size,
        channels=channels,
        latent_dim=spec.latent_dim,
        classes=classes,
        beta_1=spec.beta_1,
        mixed=spec.mixed_precision,
    )


def class_grid(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """Latent vectors and classes of every epoch's grid: one row per class, one column
    per latent vector (each column shares its vector)."""
    rng = np.random.default_rng([spec.seed, Stream.SAMPLES])
    latents = rng.standard_normal((spec.samples_per_class, spec.latent_dim), np.float32)
    tiled = np.tile(latents, (spec.classes, 1))
    return tiled, np.repeat(np.arange(spec.classes), spec.samples_per_class)


def train(spec: Spec, ctx: JobContext) -> None:
    configure_randomness(spec.seed, spec.deterministic)
    images = TrainingImages.load(spec, labelled=True)
    models = ctx.cache.get_or_build(cache_key(spec), lambda: build_models(spec))
    models.start_job(spec)
    grid_inputs = models.generator_inputs(*class_grid(spec))

    def save_grid(epoch: int, step: int) -> None:
        png = grid_png(predict(models.generator, grid_inputs), columns=spec.samples_per_class)
        save_sample(ctx, png, epoch=epoch, step=step)

    def generate(latents: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
        return predict(models.generator, models.generator_inputs(latents, classes))

    quality = sample_quality(spec, ctx, images.tensors[0], generate, classes=spec.classes)
    train_on_images(
        spec, ctx, models, images, metrics=METRICS, end_epoch=save_grid, final=("generator",),
        evaluate=quality.evaluate, evaluate_notes=quality.notes,
    )  # fmt: skip
