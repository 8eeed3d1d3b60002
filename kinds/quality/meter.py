"""Quality metrics of an image generator during training: `fid` (the Fréchet distance
between features of a fixed set of generated images and of the training images) and,
for a class-conditional generator of digits, `label_accuracy` (the share of generated
images the glyph classifier reads as the class they were generated for).

Both are pure functions of the generator's weights, so a resumed run records what an
uninterrupted one did: the real side is a fixed, seed-chosen subset of the training
images (at most REAL_IMAGES), summarised once per job; the generated side comes from
fixed latent vectors of (seed, Stream.QUALITY), at most GENERATED_IMAGES and never more
than the real subset (a tiny dataset gets a cheap, if noisier, FID), with the classes
cycling evenly. Imports TensorFlow: loaded by the kinds' `run` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import tensorflow as tf

from kinds.contract import JobContext
from kinds.datasets import GLYPHS
from kinds.quality.features import Features, fid_features
from kinds.quality.frechet import Gaussian, frechet_distance
from kinds.quality.glyph_classifier import CLASSES, GlyphClassifier, glyph_classifier
from kinds.seeds import Stream

REAL_IMAGES = 1000
GENERATED_IMAGES = 500
DIGIT_DATASETS = frozenset({GLYPHS, "mnist"})
"""Datasets whose classes are the digits 0-9 the glyph classifier reads."""
NOTE = "fid_features"
"""The note of a metrics event naming the FID's features (inception_v3, glyph_classifier)."""

Generate = Callable[[np.ndarray, np.ndarray | None], np.ndarray]
"""(latent vectors, classes or None) -> images in [0, 1]."""


class QualityJob(Protocol):
    seed: int
    dataset: str
    latent_dim: int
    quality: bool


@dataclass(frozen=True)
class QualityMeter:
    """The real images' statistics in `features`, and `reader` for label accuracy."""

    features: Features
    real: Gaussian
    reader: GlyphClassifier | None = None

    @property
    def notes(self) -> dict[str, str]:
        return {NOTE: self.features.name}

    def measure(self, generated: np.ndarray, classes: np.ndarray | None = None) -> dict[str, float]:
        """`fid` of the generated images, with `label_accuracy` when classes are given
        and the meter has a reader."""
        values = {"fid": frechet_distance(Gaussian.of(self.features(generated)), self.real)}
        if classes is not None and self.reader is not None:
            values["label_accuracy"] = float(np.mean(self.reader.classes(generated) == classes))
        return values


def quality_meter(
    ctx: JobContext, dataset: str, images: Any, *, seed: int, read_labels: bool = False
) -> QualityMeter:
    """A meter for generators of `dataset`, whose training `images` (uint8, an array or
    a tensor) give the real statistics; `read_labels` adds the reader (digits only)."""
    features = fid_features(dataset, ctx)
    real = Gaussian.of(features(real_subset(images, seed)))
    reader = None
    if read_labels and dataset in DIGIT_DATASETS:
        reader = glyph_classifier(ctx.cache, ctx.cache_dir)
    return QualityMeter(features, real, reader)


def real_subset(images: Any, seed: int) -> np.ndarray:
    """At most REAL_IMAGES training images chosen by `seed`, in [0, 1]."""
    count = int(images.shape[0])
    rng = np.random.default_rng([seed, Stream.QUALITY, 0])
    chosen = np.sort(rng.permutation(count)[:REAL_IMAGES])
    return np.asarray(tf.gather(images, chosen)).astype(np.float32) / 255.0


def generated_count(real: int) -> int:
    return min(GENERATED_IMAGES, real)


def fixed_latents(seed: int, count: int, latent_dim: int) -> np.ndarray:
    """The latent vectors of every evaluation's generated images (standard normal)."""
    rng = np.random.default_rng([seed, Stream.QUALITY, 1])
    return rng.standard_normal((count, latent_dim), np.float32)


def cycling_classes(count: int, classes: int) -> np.ndarray:
    """0, 1, ..., classes-1, 0, 1, ...: every class about as often."""
    return np.arange(count, dtype=np.int32) % classes


class Evaluation(NamedTuple):
    """What a training kind gives the loop: its `evaluate` hook (None with quality off)
    and the notes of the events."""

    evaluate: Callable[[], Mapping[str, float]] | None
    notes: Mapping[str, str]


@dataclass
class _Sampled:
    meter: QualityMeter
    generate: Generate
    latents: np.ndarray
    classes: np.ndarray | None

    def __call__(self) -> Mapping[str, float]:
        return self.meter.measure(self.generate(self.latents, self.classes), self.classes)


def sample_quality(
    spec: QualityJob,
    ctx: JobContext,
    images: Any,
    generate: Generate,
    *,
    classes: int | None = None,
) -> Evaluation:
    """The evaluation of a generator trained on `images`: `fid`, and `label_accuracy`
    for a generator conditioned on `classes` digit classes. Nothing is built when the
    spec's `quality` is off."""
    if not spec.quality:
        return Evaluation(None, {})
    meter = quality_meter(ctx, spec.dataset, images, seed=spec.seed, read_labels=classes == CLASSES)
    count = generated_count(meter.real.count)
    labels = None if classes is None else cycling_classes(count, classes)
    sampled = _Sampled(meter, generate, fixed_latents(spec.seed, count, spec.latent_dim), labels)
    return Evaluation(sampled, meter.notes)
