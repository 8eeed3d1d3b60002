"""`denoising-ae` job kind: an autoencoder that maps noisy images to clean ones.

The algorithm follows the reference denoising autoencoder on MNIST: the images are
flattened, encoded by one ReLU dense layer of 32 units and decoded by one sigmoid dense
layer back to the pixels; the input is the image plus Gaussian noise times
`noise_factor` (0.55), the target the clean image; mean squared error, Adam, batch 256,
50 epochs. After every epoch a preview is saved (sample/epoch_NNNN.png): a row of noisy
inputs, a row of what the model makes of them and a row of the clean images; at the end
the autoencoder (model/autoencoder.keras).

`noise_factor=0` is the plain autoencoder of the same text (its digit-compressing
example: Dense 32 ReLU, Dense 784 sigmoid, MSE, Adam, 50 epochs, batch 256): it
reconstructs its clean input, and its preview has two rows, the images and their
reconstructions.

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from pydantic import Field

from kinds.contract import JobContext
from kinds.fields import count_field
from kinds.training_spec import ImageTrainingSpec

DEFAULT_QUEUE = "gpu"

MAX_SAMPLES = 64


class Spec(ImageTrainingSpec):
    epochs: int = Field(50, gt=0)
    batch_size: int = Field(256, gt=0)
    encoding_dim: int = Field(32, gt=0, description="units of the code layer")
    noise_factor: float = Field(
        0.55,
        ge=0,
        description="scale of the Gaussian noise added to the inputs (0: a plain autoencoder)",
    )
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    samples: int = count_field(
        10,
        MAX_SAMPLES,
        "columns of each epoch's noisy / denoised / clean preview (noise_factor 0: images / "
        "reconstructions)",
    )


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.denoising_ae.train import train

    train(spec, ctx)
