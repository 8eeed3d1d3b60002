"""`gan-sample` job kind: images from the generator of a finished dcgan or cgan job.

Renders `count` images from latent vectors drawn with `seed` (image/sample_NNNN.png) and
their grid (grid/grid.png). A cgan generator draws the classes in `labels`, repeated to
`count` images (all its classes in turn without `labels`). With `interpolate: K` it also
renders a walk between two latent points in K frames (walk/frame_NNNN.png) and as an
animated GIF (walk/walk.gif); a cgan walk also moves its class from the first to the
last of `labels`.

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kinds.contract import JobContext, JobSpec
from kinds.datasets import DATASET_CLASSES, check_labels
from kinds.fields import count_field

DEFAULT_QUEUE = "cpu"
MODEL_INPUTS = {"model": ("dcgan", "cgan")}

MAX_COUNT = 1024
MAX_FRAMES = 512
MAX_CLASSES = max(DATASET_CLASSES.values())  # cgan trains on labelled datasets only


class Spec(JobSpec):
    model: str = Field(
        description="a dcgan or cgan job: its id, a unique prefix, or its model output (#N)"
    )
    count: int = count_field(16, MAX_COUNT, "images to render")
    seed: int = Field(0, ge=0, description="seed of the latent vectors")
    labels: list[int] | None = Field(
        None,
        min_length=1,
        description="cgan only: classes of the images, repeated to `count`",
    )
    columns: int | None = Field(
        None, gt=0, description="columns of the grid (default: one per label, else square)"
    )
    interpolate: int | None = Field(
        None,
        ge=2,
        le=MAX_FRAMES,
        description=f"frames of a latent walk (2 to {MAX_FRAMES}; none by default)",
    )
    interpolation: Literal["spherical", "linear"] = Field(
        "spherical", description="path of the walk between its two latent points"
    )
    frame_ms: int = Field(100, gt=0, description="time per frame of the walk's GIF")

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else check_labels(value, MAX_CLASSES)


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.gan_sample.generate import generate

    generate(spec, ctx)
