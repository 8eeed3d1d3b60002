"""The spec fields every training kind shares (its schedule), and those of the image
training kinds (dataset, image size), with their submit-time checks.

Light to import (pydantic and the dataset checks): the CLI validates specs with it.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, ValidationInfo, field_validator, model_validator

from kinds.contract import CheckpointedSpec
from kinds.datasets import dataset_channels, validate_dataset
from kinds.fields import IMAGE_SIZE_MULTIPLE, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, image_size_field
from kinds.precision import MIXED_PRECISION_HELP


class TrainingSpec(CheckpointedSpec):
    """The schedule of a training kind; kinds override the defaults."""

    epochs: int = Field(30, gt=0)
    batch_size: int = Field(128, gt=0)
    steps_per_epoch: int | None = Field(None, gt=0, description="cap on batches per epoch")
    learning_rate: float = Field(1e-3, gt=0)
    mixed_precision: bool = Field(False, description=MIXED_PRECISION_HELP)
    quality: bool = Field(
        True,
        description="record the held-out and quality metrics (fid, label_accuracy, val_loss, "
        "val_l1); off saves their cost",
    )
    quality_every: int | None = Field(
        None, gt=0, description="steps between quality metrics (default: at each epoch's end)"
    )


class ImageTrainingSpec(TrainingSpec):
    """Dataset and image size of an image training kind."""

    dataset: str = Field(
        "glyphs",
        description="glyphs, mnist, fashion_mnist, cifar10, or a directory of images "
        "(.png .jpg .jpeg .bmp .gif .webp, searched recursively)",
    )
    image_size: int = image_size_field(28)
    dataset_size: int | None = Field(
        None,
        gt=0,
        description="cap on training images (glyphs: how many to render, 2048 by default)",
    )

    folder_fields: ClassVar[tuple[str, ...]] = ("dataset",)
    """Fields that may name an object-store folder, synced by the worker (kinds.contract)."""
    max_image_size: ClassVar[int] = MAX_IMAGE_SIZE

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str, info: ValidationInfo) -> str:
        return validate_dataset(value, info.context)

    @field_validator("image_size")
    @classmethod
    def _check_image_size(cls, value: int) -> int:
        if value % IMAGE_SIZE_MULTIPLE or not MIN_IMAGE_SIZE <= value <= cls.max_image_size:
            raise ValueError(
                f"image_size must be a multiple of {IMAGE_SIZE_MULTIPLE} from {MIN_IMAGE_SIZE} "
                f"to {cls.max_image_size}"
            )
        return value

    @model_validator(mode="after")
    def _check_dataset_size(self) -> ImageTrainingSpec:
        if self.dataset_size is not None and self.dataset_size < self.batch_size:
            raise ValueError("dataset_size must be at least batch_size")
        return self

    @property
    def channels(self) -> int:
        """1 for glyphs, mnist and fashion_mnist; 3 for cifar10 and image directories."""
        return dataset_channels(self.dataset)


class GanSpec(ImageTrainingSpec):
    """The fields of the GAN kinds (dcgan, cgan), with the Keras DCGAN's defaults."""

    epochs: int = Field(100, gt=0)
    batch_size: int = Field(32, gt=0)
    latent_dim: int = Field(128, gt=0)
    learning_rate: float = Field(1e-4, gt=0, description="Adam learning rate of both networks")
    beta_1: float = Field(
        0.9,
        ge=0,
        lt=1,
        description="Adam's first-moment decay of both networks (Keras' default; the DCGAN "
        "paper uses 0.5)",
    )
    label_noise: float = Field(0.05, ge=0, description="scale of uniform noise on D's labels")
