"""`vae-sample` job kind: pictures from the decoder (and encoder) of a finished vae job.

Three modes:

- `grid`: the decoded grid of latent points over `grid_range` on two latent dimensions
  (`grid_dims`), every other dimension 0 (grid/latent_grid.png), as after each epoch
  of training but over any range.
- `walk`: `frames` decoded points on the way from `start` to `end` (random points drawn
  with `seed` when not given): walk/frame_NNNN.png and the animated walk/walk.gif.
- `concept`: a concept vector, the mean latent point (z_mean) of images with an
  attribute minus the mean of images without it, added with each of `strengths` to
  the latent points of `count` images without the attribute: grid/concept.png has a
  row per image and a column per strength (0 = the plain reconstruction), and
  concept/vector.json the vector. The two sets are either classes of a labelled dataset
  (`with_labels`, and `without_labels`, by default every other class: on glyphs
  `with_labels: [1]` is "digit 1 against the others") or two folders of images
  (`with_images`, `without_images`).

Importing this module is cheap: TensorFlow is loaded by `run` only.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from kinds.contract import JobContext, JobSpec
from kinds.datasets import (
    DATASET_CLASSES,
    DATASET_NAMES,
    check_labels,
    dataset_classes,
    validate_dataset,
)
from kinds.fields import count_field

DEFAULT_QUEUE = "cpu"
MODEL_INPUTS = {"model": ("vae",)}

MAX_GRID_SIZE = 64
MAX_FRAMES = 512
MAX_COUNT = 256
MAX_DATASET_SIZE = 60_000
MODE_FIELDS = {
    "walk": ("start", "end"),
    "concept": ("with_labels", "without_labels", "with_images", "without_images"),
}


class Spec(JobSpec):
    model: str = Field(description="a vae job: its id, a unique prefix, or its model output (#N)")
    mode: Literal["grid", "walk", "concept"] = "grid"
    seed: int = Field(0, ge=0, description="seed of the walk's random end points")
    # grid
    grid_size: int = count_field(30, MAX_GRID_SIZE, "points per side")
    grid_range: tuple[float, float] = Field(
        (-1.0, 1.0), description="low and high latent value on both axes"
    )
    grid_dims: tuple[int, int] = Field((0, 1), description="the two latent dims of the grid")
    # walk
    frames: int = count_field(16, MAX_FRAMES, "points of the walk", least=2)
    start: list[float] | None = Field(None, description="latent point the walk starts at")
    end: list[float] | None = Field(None, description="latent point the walk ends at")
    frame_ms: int = Field(100, gt=0, description="time per frame of the GIF")
    # concept
    dataset: str = Field("glyphs", description="labelled dataset of with_labels/without_labels")
    dataset_size: int = count_field(2048, MAX_DATASET_SIZE, "images of `dataset` to encode")
    with_labels: list[int] | None = Field(
        None, min_length=1, description="classes that have the attribute"
    )
    without_labels: list[int] | None = Field(
        None, min_length=1, description="classes that don't (default: all other classes)"
    )
    with_images: str | None = Field(None, description="folder of images with the attribute")
    without_images: str | None = Field(None, description="folder of images without it")
    strengths: list[float] = Field(
        [0.0, 0.5, 1.0, 1.5, 2.0],
        min_length=1,
        max_length=32,
        description="multiples of the concept vector added, one column each",
    )
    count: int = count_field(8, MAX_COUNT, "images the vector is added to")

    @field_validator("grid_range")
    @classmethod
    def _check_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError("grid_range must be [low, high] with low < high")
        return value

    @field_validator("grid_dims")
    @classmethod
    def _check_dims(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 0 or value[0] == value[1]:
            raise ValueError("grid_dims must be two different latent dimensions (from 0)")
        return value

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str) -> str:
        return validate_dataset(value)

    @field_validator(
        "start", "end", "with_labels", "without_labels", "with_images", "without_images"
    )
    @classmethod
    def _check_mode(cls, value: object, info: ValidationInfo) -> object:
        mode = next(mode for mode, fields in MODE_FIELDS.items() if info.field_name in fields)
        if value is not None and info.data.get("mode") != mode:
            raise ValueError(f"applies to mode {mode!r} only")
        return value

    @field_validator("with_labels", "without_labels")
    @classmethod
    def _check_labels(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is None or "dataset" not in info.data:
            return value
        classes = dataset_classes(info.data["dataset"])
        if classes is None:
            names = ", ".join(DATASET_CLASSES)
            raise ValueError(
                f"dataset {info.data['dataset']!r} has no class labels; labels need a labelled "
                f"dataset ({names}), folders go in with_images and without_images"
            )
        return check_labels(value, classes, "labels")

    folder_fields: ClassVar[tuple[str, ...]] = ("with_images", "without_images")
    """Fields that may name an object-store folder, synced by the worker (kinds.contract)."""

    @field_validator("with_images", "without_images")
    @classmethod
    def _check_folder(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if value in DATASET_NAMES:
            raise ValueError(f"{value!r} is a dataset name, not a folder of images")
        return validate_dataset(value, info.context)

    @model_validator(mode="after")
    def _check_pairs(self) -> Spec:
        if (self.start is None) != (self.end is None):
            raise ValueError("start and end go together (or neither, for random points)")
        if self.mode != "concept":
            return self
        by_labels = self.with_labels is not None or self.without_labels is not None
        by_folders = self.with_images is not None or self.without_images is not None
        if by_labels == by_folders:
            raise ValueError(
                "mode 'concept' needs with_labels (classes of a labelled dataset) or "
                "with_images and without_images (folders), not both"
            )
        if by_folders and (self.with_images is None or self.without_images is None):
            raise ValueError("with_images and without_images go together")
        if by_labels:
            if self.with_labels is None:
                raise ValueError("without_labels needs with_labels")
            if set(self.with_labels) & set(self.without_classes):
                raise ValueError("with_labels and without_labels share a class")
            if not self.without_classes:
                raise ValueError("with_labels leaves no class without the attribute")
        return self

    @property
    def without_classes(self) -> list[int]:
        """Classes without the attribute: `without_labels`, or every class not in
        `with_labels`."""
        if self.without_labels is not None:
            return list(self.without_labels)
        chosen = set(self.with_labels or ())
        return [c for c in range(dataset_classes(self.dataset) or 0) if c not in chosen]


def run(spec: Spec, ctx: JobContext) -> None:
    from kinds.vae_sample.generate import generate

    generate(spec, ctx)
