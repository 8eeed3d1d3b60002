"""`pix2pix` job kind: supervised image-to-image translation (Isola et al., 2017).

A U-Net generator (a stride-2 4x4 convolution per halving down to 1x1 -- eight at
256 px --, batch normalization on all but the first, LeakyReLU(0.2); as many
transposed convolutions back up with dropout 0.5 on the first three, ReLU, and skip
connections; tanh output) and a PatchGAN discriminator judging patches of the
input and the target (or the generated image) stacked on the channels. Losses:
binary cross-entropy, plus `l1_weight` (100) times the mean L1 distance to the target
for the generator; the discriminator's objective is halved, as in the paper. Adam 2e-4
with beta_1 0.5 for both, batch 1, random jitter (resize to 286, random crop to 256,
random mirror) at 256 px.

Data: pairs (kinds.image_pairs): the built-in glyph-outlines (a digit's outline ->
the filled digit), a folder of side-by-side A|B images, or a folder with A/ and B/
subfolders paired by name; `direction` picks which side is the input. The last
`held_out` pairs are never trained on: after every epoch a grid of rows input |
output | target on them (sample/epoch_NNNN.png) and their mean L1 (`val_l1`, on the
model's [-1, 1] scale). Metrics: d_loss, g_gan (the generator's adversarial term),
g_l1 (its unweighted L1 term), val_l1. At the end the generator
(model/generator.keras) that the translate kind applies.

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from kinds.contract import JobContext
from kinds.image_pairs import PAIRED_GLYPHS, validate_paired_dataset
from kinds.translation import Direction, TranslationSpec

DEFAULT_QUEUE = "gpu"


class Spec(TranslationSpec):
    dataset: str = Field(
        PAIRED_GLYPHS,
        description=f"paired images: {PAIRED_GLYPHS} (built in), a directory of side-by-side "
        "A|B images, a directory with A/ and B/ subfolders paired by file name, or s3://...",
    )
    direction: Direction = Field("AtoB", description="train to translate A to B, or B to A")
    l1_weight: float = Field(100.0, ge=0, description="weight of the L1 term (the paper's lambda)")

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str, info: ValidationInfo) -> str:
        return validate_paired_dataset(value, info.context)

    @field_validator("image_size")
    @classmethod
    def _check_power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("image_size of a U-Net must be a power of two: 16, 32, 64, 128 or 256")
        return value


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.pix2pix.train import train

    train(spec, ctx)
