"""`deepdream` job kind: DeepDream with InceptionV3, as in the reference.

Gradient ascent on the image of the weighted mean squared activations of InceptionV3
layers (mixed4: 1.0, mixed5: 1.5, mixed6: 2.0, mixed7: 2.5 by default; a 2-pixel border of
each activation map is left out), with the gradient normalised to unit L2 norm and a
step of 20, over 3 octaves (the image shrunk by 1.4**2, then 1.4, then full size), 30
steps each, an octave ending early once the loss exceeds 15; after each octave the
detail lost by shrinking the original is added back. InceptionV3 pre- and de-processing.

Outputs: `snapshot/octave_N.png` after each octave (at that octave's size) and
`image/final.png`. Metrics: `loss` and `octave`.

Importing this module is cheap: TensorFlow is loaded by `run` only. Layer names are
checked at submit against a static list of InceptionV3's named blocks (see
`kinds.backbones`), and the image against the octaves: every layer's activations
must keep at least one pixel inside the 2-pixel border at the smallest octave.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from kinds import backbones
from kinds.contract import CheckpointedSpec, JobContext
from kinds.datasets import check_image_file
from kinds.images import image_size

DEFAULT_QUEUE = "gpu"
INPUT_FILES = ("image",)

MAX_SIDE = 4096  # pixels, either side of the input image (it is processed at full size)
BORDER = 2  # pixels of each activation map's edge left out of the loss
DEFAULT_LAYERS = {"mixed4": 1.0, "mixed5": 1.5, "mixed6": 2.0, "mixed7": 2.5}


class Spec(CheckpointedSpec):
    image: str = Field(description="image file to dream on (copied into the input store)")
    layers: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_LAYERS),
        min_length=1,
        description="InceptionV3 layer name -> weight of its activations in the loss",
    )
    octaves: int = Field(3, gt=0, description="scales, the smallest first")
    octave_scale: float = Field(1.4, ge=1, description="size ratio of successive octaves")
    steps: int = Field(30, gt=0, description="gradient ascent steps per octave")
    step_size: float = Field(20.0, gt=0, description="length of each (normalised) step")
    max_loss: float | None = Field(
        15.0, description="an octave ends once its loss exceeds this; null: never"
    )
    backbone_weights: str = Field(
        backbones.IMAGENET, description="imagenet, none (random), or a Keras weights file"
    )
    checkpoint_every: int = Field(
        10, gt=0, description="steps between checkpoints (one image each: cheap)"
    )

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str) -> str:
        path = Path(value).expanduser()
        check_image_file(path)
        return str(path.resolve())

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, value: dict[str, float]) -> dict[str, float]:
        backbones.check_layers(backbones.INCEPTION_V3, list(value))
        for name, weight in value.items():
            if not math.isfinite(weight):
                raise ValueError(f"layer {name!r} has weight {weight}, not a finite number")
        return value

    @field_validator("backbone_weights")
    @classmethod
    def _check_weights(cls, value: str) -> str:
        return backbones.validate_backbone_weights(value)

    @model_validator(mode="after")
    def _check_size(self) -> Spec:
        width, height = image_size(self.image)
        if max(width, height) > MAX_SIDE:
            raise ValueError(
                f"image is {width}x{height} pixels, over the {MAX_SIDE}-pixel limit per side"
            )
        smallest = self.octave_shapes[0]
        for name in self.layers:
            sides = [backbones.inception_v3_feature_side(side, name) for side in smallest]
            if min(sides) <= 2 * BORDER:
                raise ValueError(
                    f"image {width}x{height} is too small for layer {name!r}: its first octave "
                    f"({smallest[1]}x{smallest[0]}) gives {sides[1]}x{sides[0]} activations, "
                    f"nothing inside their {BORDER}-pixel border; use a larger image, fewer "
                    f"octaves or an earlier layer"
                )
        return self

    @property
    def octave_shapes(self) -> list[tuple[int, int]]:
        """(height, width) of each octave, the smallest first, as the reference: the
        original divided by octave_scale**i, rounded down."""
        width, height = image_size(self.image)
        shapes = [
            (int(height / self.octave_scale**i), int(width / self.octave_scale**i))
            for i in range(1, self.octaves)
        ]
        return [*reversed(shapes), (height, width)]


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.deepdream.dream import dream

    dream(spec, ctx)
