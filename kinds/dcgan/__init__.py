"""`dcgan` job kind: a deep convolutional GAN trained on a small image dataset.

The algorithm follows the Keras DCGAN on 64x64 CelebA: strided convolutions and
LeakyReLU, a sigmoid discriminator with dropout, Adam at 1e-4 for both networks,
binary cross-entropy with generated=1 / real=0 and noisy discriminator labels. At the
end of every epoch a grid of images from fixed latent vectors is saved
(sample/epoch_NNNN.png); at the end the generator is saved (model/generator.keras).

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from kinds.contract import JobContext
from kinds.fields import count_field, image_size_field
from kinds.training_spec import GanSpec

DEFAULT_QUEUE = "gpu"

MAX_SAMPLES = 256


class Spec(GanSpec):
    image_size: int = image_size_field(64)
    samples: int = count_field(16, MAX_SAMPLES, "images in each epoch's grid")


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.dcgan.train import train

    train(spec, ctx)
