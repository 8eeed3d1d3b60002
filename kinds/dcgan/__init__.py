"""`dcgan` job kind: a deep convolutional GAN trained on a small image dataset.

The algorithm follows the Keras DCGAN on 64x64 CelebA: strided convolutions and
LeakyReLU, a sigmoid discriminator with dropout, Adam at 1e-4 for both networks,
binary cross-entropy with generated=1 / real=0 and noisy discriminator labels. At the
end of every epoch a grid of images from fixed latent vectors is saved
(sample/epoch_NNNN.png); at the end the generator is saved (model/generator.keras).

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from pydantic import Field

from kinds.contract import JobContext
from kinds.training import ImageTrainingSpec

DEFAULT_QUEUE = "gpu"

MAX_SAMPLES = 256


class Spec(ImageTrainingSpec):
    image_size: int = Field(
        64, description="side of the square images: a multiple of 4 from 16 to 128"
    )
    epochs: int = Field(100, gt=0)
    batch_size: int = Field(32, gt=0)
    latent_dim: int = Field(128, gt=0)
    learning_rate: float = Field(1e-4, gt=0, description="Adam learning rate of both networks")
    label_noise: float = Field(0.05, ge=0, description="scale of uniform noise on D's labels")
    samples: int = Field(16, gt=0, le=MAX_SAMPLES, description="images in each epoch's grid")


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.dcgan.train import train

    train(spec, ctx)
