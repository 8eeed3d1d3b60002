"""`vae` job kind: a convolutional variational autoencoder on a small image dataset.

The algorithm follows the Keras VAE on MNIST: a strided-convolution encoder to `z_mean`
and `z_log_var`, a sampling layer (z = z_mean + exp(z_log_var / 2) * epsilon), a
transposed-convolution decoder with a sigmoid output, and as loss the binary
cross-entropy summed over the pixels plus the KL divergence from the standard normal,
minimised with Adam; latent_dim 2 and batch 128. After every epoch the decoded 2-D
latent grid is saved (sample/epoch_NNNN.png); at the end the encoder and the decoder
(model/encoder.keras, model/decoder.keras).

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from pydantic import Field

from kinds.contract import JobContext
from kinds.fields import count_field
from kinds.training_spec import ImageTrainingSpec

DEFAULT_QUEUE = "gpu"

MAX_GRID_SIZE = 64


class Spec(ImageTrainingSpec):
    epochs: int = Field(30, gt=0)
    batch_size: int = Field(128, gt=0)
    latent_dim: int = Field(2, ge=2, description="dimensions of the latent space (2 or more)")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    grid_size: int = count_field(
        30, MAX_GRID_SIZE, "points per side of each epoch's latent grid (first two latent dims)"
    )
    grid_range: float = Field(
        1.0, gt=0, description="the grid spans -grid_range..grid_range on both axes"
    )


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.vae.train import train

    train(spec, ctx)
