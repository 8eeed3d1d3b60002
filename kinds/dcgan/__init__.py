"""`dcgan` job kind: an unconditional GAN trained on a small image dataset.

`architecture` picks the networks, each as its reference text builds them:

- `dcgan` (the default): the Keras DCGAN on 64x64 CelebA. Strided convolutions and
  LeakyReLU, a sigmoid discriminator with dropout, Adam at 1e-4 for both networks.
- `upsample`: the convolutional GAN on MNIST of the Korean deep learning lecture notes.
  Discriminator: Conv2D 64, 128, 256 (5x5, stride 2, ReLU) each followed by
  Dropout(0.4), then a sigmoid Dense. Generator: Dense to (size/4)^2 x 64 with batch
  normalisation and LeakyReLU, Dropout(0.4), two UpSampling2D + Conv2DTranspose (32,
  16) + batch normalisation + LeakyReLU stages, a sigmoid Conv2D.
- `mlp`: the fully connected GAN on MNIST of the PyTorch textbook (13-25, 13-26).
  Generator: Dense 256, 512, 1024 with LeakyReLU(0.2), then tanh pixels, emitted mapped
  to [0, 1]. Discriminator: the pixels mapped back to the text's [-1, 1], Dense 1024,
  512, 256 with LeakyReLU(0.2) and Dropout(0.3), then a sigmoid Dense. Every layer
  starts as PyTorch's nn.Linear does (uniform in +-1/sqrt(fan_in)).

Every architecture trains with binary cross-entropy, generated=1 / real=0, and
`label_noise` on the discriminator's labels. Each step makes `discriminator_steps`
discriminator updates (the texts' k) on one real batch, then one generator update.
Fields not given take the defaults of the architecture's text (`ARCHITECTURE_DEFAULTS`;
noise is `label_noise`):

| architecture | image_size | epochs | batch_size | latent_dim | learning_rate | beta_1 | noise |
| --- | --- | --- | --- | --- | --- | --- | --- |
| dcgan | 64 | 100 | 32 | 128 | 1e-4 | 0.9 | 0.05 |
| upsample | 28 | 100 | 128 | 32 | 4e-4 | 0.9 | 0 |
| mlp | 28 | 200 | 512 | 128 | 2e-4 | 0.9 | 0 |

The upsample text's EPOCHS=2000 counts single batches, not epochs, so its epochs stay
at the kind's 100. Latent vectors are Gaussian for every architecture, as gan-sample
draws them (the upsample text draws uniform ones).

At the end of every epoch a grid of images from fixed latent vectors is saved
(sample/epoch_NNNN.png). At the end the generator is saved (model/generator.keras).

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field, model_validator

from kinds.contract import JobContext
from kinds.fields import count_field, image_size_help
from kinds.training_spec import GanSpec

DEFAULT_QUEUE = "gpu"

MAX_SAMPLES = 256
MAX_DISCRIMINATOR_STEPS = 10

DCGAN: Final = "dcgan"
UPSAMPLE: Final = "upsample"
MLP: Final = "mlp"
Architecture = Literal["dcgan", "upsample", "mlp"]

ARCHITECTURE_DEFAULTS: dict[str, dict[str, Any]] = {
    DCGAN: {  # the Keras DCGAN (its training_spec.GanSpec defaults)
        "image_size": 64,
        "epochs": 100,
        "batch_size": 32,
        "latent_dim": 128,
        "learning_rate": 1e-4,
        "beta_1": 0.9,
        "label_noise": 0.05,
    },
    UPSAMPLE: {
        "image_size": 28,
        "epochs": 100,  # the text's 2000 "epochs" are batches
        "batch_size": 128,
        "latent_dim": 32,
        "learning_rate": 4e-4,
        "beta_1": 0.9,  # Keras' Adam default
        "label_noise": 0.0,
    },
    MLP: {
        "image_size": 28,
        "epochs": 200,
        "batch_size": 512,
        "latent_dim": 128,
        "learning_rate": 2e-4,
        "beta_1": 0.9,  # PyTorch's Adam default
        "label_noise": 0.0,
    },
}
"""Architecture -> the defaults of its text for the fields the user does not give."""


def by_architecture(name: str, help_: str) -> str:
    """`help_`, followed by the field's default for each architecture."""
    values = ", ".join(f"{arch} {row[name]:g}" for arch, row in ARCHITECTURE_DEFAULTS.items())
    return f"{help_} (default by architecture: {values})"


DEFAULTS = ARCHITECTURE_DEFAULTS[DCGAN]


class Spec(GanSpec):
    architecture: Architecture = Field(
        DCGAN,
        description="networks: dcgan (strided convolutions), upsample (upsampling and batch "
        "normalisation) or mlp (fully connected)",
    )
    image_size: int = Field(
        DEFAULTS["image_size"],
        description=by_architecture("image_size", image_size_help()),
    )
    samples: int = count_field(16, MAX_SAMPLES, "images in each epoch's grid")
    discriminator_steps: int = count_field(
        1, MAX_DISCRIMINATOR_STEPS, "discriminator updates per generator update (the texts' k)"
    )
    epochs: int = Field(DEFAULTS["epochs"], gt=0, description=by_architecture("epochs", "epochs"))
    batch_size: int = Field(
        DEFAULTS["batch_size"], gt=0, description=by_architecture("batch_size", "images per step")
    )
    latent_dim: int = Field(
        DEFAULTS["latent_dim"], gt=0, description=by_architecture("latent_dim", "latent size")
    )
    learning_rate: float = Field(
        DEFAULTS["learning_rate"],
        gt=0,
        description=by_architecture("learning_rate", "Adam learning rate of both networks"),
    )
    beta_1: float = Field(
        DEFAULTS["beta_1"],
        ge=0,
        lt=1,
        description=by_architecture(
            "beta_1", "Adam's first-moment decay of both networks (the DCGAN paper uses 0.5)"
        ),
    )
    label_noise: float = Field(
        DEFAULTS["label_noise"],
        ge=0,
        description=by_architecture("label_noise", "scale of uniform noise on D's labels"),
    )

    @model_validator(mode="before")
    @classmethod
    def _architecture_defaults(cls, data: Any) -> Any:
        """Fields not given take their architecture's defaults; given ones win."""
        if not isinstance(data, dict):
            return data
        architecture = data.get("architecture", DCGAN)
        if not isinstance(architecture, str) or architecture not in ARCHITECTURE_DEFAULTS:
            return data  # the field's own check reports it
        return {**ARCHITECTURE_DEFAULTS[architecture], **data}


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.dcgan.train import train

    train(spec, ctx)
