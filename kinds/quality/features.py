"""Which network's features an FID uses, per dataset.

- `glyphs`: always the glyph classifier (kinds.quality.glyph_classifier): ImageNet
  features of 28-pixel renders of a font measure little, and the classifier needs no
  download.
- every other dataset: InceptionV3 with ImageNet weights (kinds.quality.inception), as
  the standard FID, when the weights are in Keras' cache; else the glyph classifier, and
  the event's notes say so.

Imports TensorFlow: loaded by the kinds' `run` only.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from kinds.contract import JobContext
from kinds.datasets import GLYPHS
from kinds.quality.glyph_classifier import glyph_classifier
from kinds.quality.inception import inception_features


class Features(Protocol):
    """Feature vectors (n, d) of images in [0, 1] (n, h, w, 1 or 3); `name` says which."""

    name: str

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def fid_features(dataset: str, ctx: JobContext) -> Features:
    if dataset != GLYPHS:
        inception = inception_features(ctx.cache)
        if inception is not None:
            return inception
    return glyph_classifier(ctx.cache, ctx.cache_dir)
