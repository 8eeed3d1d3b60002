"""`style-transfer` job kind: Gatys et al.'s neural style transfer with VGG19.

The reference algorithm: the generated image starts as the content image and is
optimised for content weight x the squared feature distance to the content image at
`block5_conv2`, plus style weight / 5 x the Gram-matrix distance to the style image at
`block1_conv1` ... `block5_conv1` (normalised by 4 x 3**2 x (height x width)**2, as the
reference does), plus total-variation weight x sum((dx**2 + dy**2) ** 1.25); by SGD with
an exponentially decaying learning rate (100, x0.96 every 100 steps) for 4000 iterations,
at height 400 with the content image's aspect ratio, in VGG19's preprocessed space.

Faster than the reference, same result: the style Gram matrices and the content
features of the two fixed images are computed once per job, so each step runs only the
generated image through VGG19 instead of all three. `optimizer: lbfgs` uses L-BFGS (the
original paper's optimiser) instead.

Outputs: `snapshot/iteration_NNNNN.png` every `snapshot_every` iterations and
`image/final.png`. Metric: `loss` (with L-BFGS also `evaluations`).

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kinds import backbones
from kinds.contract import CheckpointedSpec, JobContext
from kinds.datasets import check_image_file
from kinds.images import image_size, scaled_width

DEFAULT_QUEUE = "gpu"
INPUT_FILES = ("content", "style")

MAX_SIDE = 4096  # pixels, either side of the generated image
CONTENT_LAYER = "block5_conv2"
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")


class Spec(CheckpointedSpec):
    content: str = Field(description="content image file (copied into the input store)")
    style: str = Field(description="style image file, resized to the generated image's size")
    height: int = Field(
        400,
        gt=0,
        description=f"height of the generated image; its width keeps the content image's "
        f"aspect ratio; both at most {MAX_SIDE}",
    )
    iterations: int = Field(4000, gt=0, description="optimiser iterations")
    content_weight: float = Field(2.5e-8, ge=0)
    style_weight: float = Field(1e-6, ge=0, description="shared by the style layers")
    total_variation_weight: float = Field(1e-6, ge=0)
    optimizer: Literal["sgd", "lbfgs"] = Field(
        "sgd", description="sgd: the reference; lbfgs: the original paper's choice"
    )
    learning_rate: float = Field(
        100.0, gt=0, description="SGD: initial rate; L-BFGS: scale of the first step"
    )
    decay_steps: int = Field(100, gt=0, description="SGD: steps per decay of the rate")
    decay_rate: float = Field(0.96, gt=0, le=1, description="SGD: factor per decay_steps")
    lbfgs_memory: int = Field(10, gt=0, le=100, description="L-BFGS: correction pairs kept")
    snapshot_every: int = Field(100, gt=0, description="iterations between snapshot images")
    backbone_weights: str = Field(
        backbones.IMAGENET, description="imagenet, none (random), or a Keras weights file"
    )
    content_layer: str = Field(CONTENT_LAYER, description="VGG19 layer of the content loss")
    style_layers: tuple[str, ...] = Field(
        STYLE_LAYERS, min_length=1, description="VGG19 layers of the style loss"
    )

    @field_validator("content", "style")
    @classmethod
    def _check_image(cls, value: str) -> str:
        return checked_image(value)

    @field_validator("backbone_weights")
    @classmethod
    def _check_weights(cls, value: str) -> str:
        return backbones.validate_backbone_weights(value)

    @field_validator("content_layer")
    @classmethod
    def _check_content_layer(cls, value: str) -> str:
        backbones.check_layers(backbones.VGG19, [value], "content_layer")
        return value

    @field_validator("style_layers")
    @classmethod
    def _check_style_layers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        backbones.check_layers(backbones.VGG19, value, "style layer")
        if len(set(value)) != len(value):
            raise ValueError("style_layers lists a layer twice")
        return value

    @model_validator(mode="after")
    def _check_size(self) -> Spec:
        height, width = self.size
        # Each pooling halves the image: every chosen layer needs at least one pixel.
        # Each pooling halves the image: every chosen layer needs at least one pixel, and
        # the total variation loss two rows and two columns.
        smallest = max(2 ** max(vgg19_pools_before(name) for name in self.layers), 2)
        for side, value in (("height", height), ("width", width)):
            if not smallest <= value <= MAX_SIDE:
                raise ValueError(
                    f"the generated image would be {width}x{height} pixels; its {side} must "
                    f"be from {smallest} to {MAX_SIDE}"
                )
        return self

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the generated image."""
        width, height = image_size(self.content)
        return self.height, scaled_width(width, height, self.height)

    @property
    def layers(self) -> tuple[str, ...]:
        """The VGG19 layers the job reads: the content layer, then the style layers."""
        return tuple(dict.fromkeys((self.content_layer, *self.style_layers)))


def checked_image(value: str) -> str:
    """A safe, readable image file (see datasets.check_image_file), as an absolute path."""
    path = Path(value).expanduser()
    check_image_file(path)
    return str(path.resolve())


def vgg19_pools_before(layer: str) -> int:
    """How many 2x2 poolings VGG19 applies before `layer`'s output."""
    block, _, name = layer.partition("_")
    index = int(block.removeprefix("block"))
    return index if name == "pool" else index - 1


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.style_transfer.render import render

    render(spec, ctx)
