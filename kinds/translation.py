"""The spec fields the image-to-image kinds share (pix2pix, cyclegan), with their papers'
defaults: 256 px, batch 1, Adam 2e-4 with beta_1 0.5, random jitter, 64 base filters.

Light to import (pydantic and the dataset checks): the CLI validates specs with it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kinds.fields import MAX_TRANSLATION_IMAGE_SIZE, count_field, image_size_field
from kinds.training_spec import ImageTrainingSpec

JITTER_MARGIN = 30 / 256
"""Random jitter: resize to (1 + margin) x the size (286 for 256 px), crop back at random."""
MAX_HELD_OUT = 64
CHECKPOINT_EVERY = 1000
"""Steps between checkpoints: five times the other kinds', as batch-1 steps are short and
the checkpoints large (on the tutorial's V100, about 40 s of pix2pix's steps)."""
Direction = Literal["AtoB", "BtoA"]


def jitter_size(image_size: int) -> int:
    """The side images are resized to before a random crop to `image_size`."""
    return image_size + round(image_size * JITTER_MARGIN)


class TranslationSpec(ImageTrainingSpec):
    """A translation kind's schedule, data and network widths."""

    max_image_size: ClassVar[int] = MAX_TRANSLATION_IMAGE_SIZE

    image_size: int = image_size_field(256, MAX_TRANSLATION_IMAGE_SIZE)
    epochs: int = Field(200, gt=0)
    batch_size: int = Field(1, gt=0)
    learning_rate: float = Field(2e-4, gt=0, description="Adam learning rate of every network")
    beta_1: float = Field(0.5, ge=0, lt=1, description="Adam's first-moment decay")
    jitter: bool = Field(
        True, description="resize to 286/256 of the size, crop back at random, mirror at random"
    )
    filters: int = Field(64, gt=0, description="filters of the networks' first layer")
    held_out: int = count_field(
        4, MAX_HELD_OUT, "images kept out of training for each epoch's grid"
    )
    checkpoint_every: int = Field(
        CHECKPOINT_EVERY,
        gt=0,
        description="steps between checkpoints (a pix2pix checkpoint with both Adams' slots "
        "is 384 MB at 64 px, 655 MB at 256)",
    )

    @property
    def channels(self) -> int:
        return 3

    @property
    def load_size(self) -> int:
        """The side images are loaded at: the jitter's, or the training size."""
        return jitter_size(self.image_size) if self.jitter else self.image_size
