"""`cgan` job kind: a conditional DCGAN, both networks given the class label.

The networks, losses and optimisers are the dcgan kind's (the Keras DCGAN: strided
convolutions and transposed convolutions with LeakyReLU(0.2), dropout before the
discriminator's output, Adam at 1e-4, binary cross-entropy, noisy discriminator labels),
conditioned as a cGAN: the one-hot class joins the latent vector at the generator's
input and is tiled over the image as extra channels at the discriminator's input. It
trains on labelled datasets only (glyphs' digits, mnist, fashion_mnist, cifar10). After
every epoch a grid with one row per class is saved (sample/epoch_NNNN.png; each column
shares one latent vector); at the end the generator (model/generator.keras, inputs
`latent` and one-hot `label`).

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, ValidationInfo, field_validator

from kinds.contract import JobContext
from kinds.datasets import dataset_classes, validate_labelled_dataset
from kinds.fields import count_field, image_size_field
from kinds.training_spec import GanSpec

DEFAULT_QUEUE = "gpu"

MAX_SAMPLES_PER_CLASS = 32


class Spec(GanSpec):
    dataset: str = Field(
        "glyphs",
        description="a labelled dataset: glyphs (digits, built in), mnist, fashion_mnist, "
        "cifar10 (image folders have no labels)",
    )
    image_size: int = image_size_field(28)
    samples_per_class: int = count_field(
        8, MAX_SAMPLES_PER_CLASS, "columns of each epoch's grid (one row per class)"
    )

    folder_fields: ClassVar[tuple[str, ...]] = ()  # a labelled dataset is a named one

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str, info: ValidationInfo) -> str:
        return validate_labelled_dataset(value)

    @property
    def classes(self) -> int:
        classes = dataset_classes(self.dataset)
        assert classes is not None  # checked at validation
        return classes


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.cgan.train import train

    train(spec, ctx)
