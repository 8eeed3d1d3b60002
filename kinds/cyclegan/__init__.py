"""`cyclegan` job kind: unpaired image-to-image translation (Zhu et al., 2017).

Two ResNet generators, G: A -> B and F: B -> A (c7s1-64, two stride-2 downsamplings
to 128 and 256 filters, `residual_blocks` residual blocks -- 9 at 256 px, 6 below --,
two upsamplings, c7s1-3 with tanh; reflection padding and instance normalization),
and two 70x70 PatchGAN discriminators, D_A and D_B, with instance normalization.
Least-squares GAN losses, cycle consistency `cycle_weight` (10) x L1 and identity
`identity_weight` (0.5) x `cycle_weight` x L1; four Adams at 2e-4 with beta_1 0.5;
batch 1; each discriminator is shown generated images from a history of `pool_size`
(50), part of the checkpoint; the learning rate stays constant for the first half of
the epochs and falls linearly to zero over the second. Random jitter as pix2pix.

Data: unpaired images (kinds.image_pairs): the built-in glyph-inks (chalk-on-slate
digits A, ink-on-paper digits B), or a directory with A/ and B/ (or trainA/ and
trainB/) subfolders. An epoch is one pass over the larger side; the other side's
images are drawn at random. The last `held_out` images of each side are never trained
on: after every epoch a grid of rows A | G(A) | F(G(A)) | B | F(B) | G(F(B)) on them
(sample/epoch_NNNN.png). Metrics: g_loss and f_loss (each generator's total), d_a_loss,
d_b_loss, cycle_loss and identity_loss (unweighted L1 means of both directions). At the
end both generators (model/generator_ab.keras, model/generator_ba.keras) that the
translate kind applies in either `direction`.

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from kinds.contract import JobContext
from kinds.fields import count_field
from kinds.image_pairs import UNPAIRED_GLYPHS, validate_unpaired_dataset
from kinds.translation import TranslationSpec

DEFAULT_QUEUE = "gpu"

MAX_POOL = 1000
MAX_RESIDUAL_BLOCKS = 32
LARGE_IMAGE = 256
"""From this size on, the paper's generator has 9 residual blocks; 6 below."""


class Spec(TranslationSpec):
    dataset: str = Field(
        UNPAIRED_GLYPHS,
        description=f"unpaired images: {UNPAIRED_GLYPHS} (built in), or a directory with A/ and "
        "B/ (or trainA/ and trainB/) subfolders, or s3://...",
    )
    cycle_weight: float = Field(10.0, ge=0, description="weight of the cycle-consistency L1")
    identity_weight: float = Field(
        0.5, ge=0, description="weight of the identity L1, as a fraction of cycle_weight"
    )
    pool_size: int = count_field(
        50, MAX_POOL, "generated images each discriminator keeps to judge", least=0
    )
    residual_blocks: int | None = Field(
        None,
        gt=0,
        le=MAX_RESIDUAL_BLOCKS,
        description="residual blocks of each generator (default: 9 at 256 px, 6 below)",
    )

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str, info: ValidationInfo) -> str:
        return validate_unpaired_dataset(value, info.context)

    @property
    def blocks(self) -> int:
        if self.residual_blocks is not None:
            return self.residual_blocks
        return 9 if self.image_size >= LARGE_IMAGE else 6


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.cyclegan.train import train

    train(spec, ctx)
