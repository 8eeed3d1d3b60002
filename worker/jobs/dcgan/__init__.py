"""`dcgan` job kind: a deep convolutional GAN trained on a small image dataset.

The algorithm follows the Keras DCGAN on 64x64 CelebA: strided convolutions and
LeakyReLU, a sigmoid discriminator with dropout, Adam at 1e-4 for both networks,
binary cross-entropy with generated=1 / real=0 and noisy discriminator labels. At the
end of every epoch a grid of images from fixed latent vectors is saved
(sample/epoch_NNNN.png); at the end the generator is saved (model/generator.keras).

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from worker.jobs.context import CheckpointedSpec, JobContext
from worker.jobs.datasets import dataset_channels, validate_dataset

DEFAULT_QUEUE = "gpu"

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 128
MAX_SAMPLES = 256


class Spec(CheckpointedSpec):
    dataset: str = Field(
        "glyphs",
        description="glyphs, mnist, fashion_mnist, cifar10, or a directory of images "
        "(.png .jpg .jpeg .bmp .gif .webp, searched recursively)",
    )
    image_size: int = Field(
        64,
        description=f"side of the square images: a multiple of 4 from {MIN_IMAGE_SIZE} to "
        f"{MAX_IMAGE_SIZE} (e.g. 28, 32, 64)",
    )
    epochs: int = Field(100, gt=0)
    batch_size: int = Field(32, gt=0)
    latent_dim: int = Field(128, gt=0)
    steps_per_epoch: int | None = Field(None, gt=0, description="cap on batches per epoch")
    learning_rate: float = Field(1e-4, gt=0, description="Adam learning rate of both networks")
    label_noise: float = Field(0.05, ge=0, description="scale of uniform noise on D's labels")
    samples: int = Field(16, gt=0, le=MAX_SAMPLES, description="images in each epoch's grid")
    dataset_size: int | None = Field(
        None,
        gt=0,
        description="cap on training images (glyphs: how many to render, 2048 by default)",
    )

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str) -> str:
        return validate_dataset(value)

    @field_validator("image_size")
    @classmethod
    def _check_image_size(cls, value: int) -> int:
        if value % 4 or not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be a multiple of 4 from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}"
            )
        return value

    @model_validator(mode="after")
    def _check_dataset_size(self) -> Spec:
        if self.dataset_size is not None and self.dataset_size < self.batch_size:
            raise ValueError("dataset_size must be at least batch_size")
        return self

    @property
    def channels(self) -> int:
        """1 for glyphs, mnist and fashion_mnist; 3 for cifar10 and image directories."""
        return dataset_channels(self.dataset)


def run(spec: Spec, ctx: JobContext) -> None:
    from worker.jobs.dcgan.train import train

    train(spec, ctx)
