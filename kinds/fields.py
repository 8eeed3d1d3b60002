"""Spec fields whose ranges and help texts come from the constants that bound them, so
that a limit is written once and the help says what the check enforces."""

from __future__ import annotations

from typing import Any

from pydantic import Field

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 128
"""Sides of the square images the image training kinds train on (multiples of 4)."""
MAX_TRANSLATION_IMAGE_SIZE = 256
"""The ceiling of the image-to-image kinds (pix2pix, cyclegan): their papers' 256 px."""
IMAGE_SIZE_MULTIPLE = 4


def image_size_help(most: int = MAX_IMAGE_SIZE) -> str:
    return (
        f"side of the square images: a multiple of {IMAGE_SIZE_MULTIPLE} from {MIN_IMAGE_SIZE} "
        f"to {most} (e.g. 28, 32, 64)"
    )


def image_size_field(default: int, most: int = MAX_IMAGE_SIZE) -> Any:
    """`image_size` of an image training kind (checked by ImageTrainingSpec)."""
    return Field(default, description=image_size_help(most))


def count_field(default: int, most: int, help_: str, *, least: int = 1) -> Any:
    """A whole number from `least` to `most`, its range named in its help text."""
    description = f"{help_} ({least} to {most})"
    if least == 1:  # "greater than 0" reads better than "greater than or equal to 1"
        return Field(default, gt=0, le=most, description=description)
    return Field(default, ge=least, le=most, description=description)
