"""`translate` job kind: apply a trained pix2pix generator, or either generator of a
cyclegan job, to images.

Each input image (copied into the input store at submit) is cropped to its centred
square and resized to the model's size, translated on its own, and saved
(image/translated_NNNN.png, in the order given), with a grid of input | output pairs, a
row per image (grid/grid.png). A pix2pix generator runs in training mode, as in the
paper and the TensorFlow tutorial: batch normalization on the image's own statistics
and dropout as noise (drawn from `seed`); with the moving averages an early generator
does worse than its input. A cyclegan job translates A to B (`direction: AtoB`, its
generator_ab) or B to A (`BtoA`, generator_ba).

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from kinds.contract import JobContext, JobSpec, Submission
from kinds.datasets import check_image_file

DEFAULT_QUEUE = "cpu"
MODEL_INPUTS = {"model": ("pix2pix", "cyclegan")}
INPUT_FILES = ("images",)

MAX_IMAGES = 256
PIX2PIX_GENERATOR = "generator.keras"
CYCLEGAN_GENERATORS = {"AtoB": "generator_ab.keras", "BtoA": "generator_ba.keras"}


class Spec(JobSpec):
    model: str = Field(
        min_length=1,
        description="a pix2pix or cyclegan job: its id, a unique prefix, or a model output (#N)",
    )
    images: list[str] = Field(
        min_length=1, max_length=MAX_IMAGES, description="image files to translate (one or a list)"
    )
    direction: Literal["AtoB", "BtoA"] | None = Field(
        None, description="cyclegan only: A to B (the default) or B to A"
    )
    seed: int = Field(0, ge=0, description="pix2pix only: its dropout noise")

    @field_validator("images", mode="before")
    @classmethod
    def _one_image(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value  # --set images=photo.png

    @field_validator("images")
    @classmethod
    def _check_images(cls, value: list[str]) -> list[str]:
        paths = [Path(path).expanduser() for path in value]
        for path in paths:
            check_image_file(path)
        return [str(path.resolve()) for path in paths]

    @field_validator("direction")
    @classmethod
    def _check_direction(cls, value: str | None, info: ValidationInfo) -> str | None:
        model = info.data.get("model")
        if value is None or model is None or not isinstance(info.context, Submission):
            return value
        found = info.context.outputs_of(model, "model")
        if found is not None and PIX2PIX_GENERATOR in found[1]:
            raise ValueError(direction_refused(found[0]))
        return value


def direction_refused(job_id: str) -> str:
    return (
        f"direction applies to a cyclegan model; job {job_id} made a pix2pix generator, "
        "which translates the direction it was trained in"
    )


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.translate.generate import generate

    generate(spec, ctx)
