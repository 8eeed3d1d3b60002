"""Image helpers shared by kinds: float arrays in [0, 1] to uint8 and to PNG bytes."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

PNG_COMPRESS_LEVEL = 6  # fixed so the same pixels always give the same bytes


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1] to uint8 (NaN becomes 0, values outside are clipped)."""
    scaled = np.nan_to_num(np.asarray(images, dtype=np.float32), nan=0.0) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    """One uint8 image (h, w), (h, w, 1) or (h, w, 3) as PNG bytes; one channel stays mode L."""
    if image.dtype != np.uint8:
        raise ValueError(f"png_bytes wants uint8 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def grid_shape(count: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, columns) of a grid holding `count` cells; about square by default."""
    if count <= 0:
        raise ValueError("a grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(count))
    return math.ceil(count / columns), columns


def grid_png(images: np.ndarray, columns: int | None = None, padding: int = 2) -> bytes:
    """Tile images (n, h, w, c) with values in [0, 1] into one PNG.

    Cells are separated and framed by `padding` black pixels, so the picture is
    columns * (w + padding) + padding wide and rows * (h + padding) + padding high.
    The bytes depend only on the pixels (fixed compression, no metadata).
    """
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise ValueError(f"grid_png wants (n, h, w, 1 or 3) images, got shape {images.shape}")
    count, height, width, channels = images.shape
    rows, columns = grid_shape(count, columns)
    canvas = np.zeros(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
        dtype=np.uint8,
    )
    for index, image in enumerate(to_uint8(images)):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        canvas[top : top + height, left : left + width] = image
    return png_bytes(canvas)
