"""Image helpers shared by kinds: float arrays in [0, 1] to uint8 and to PNG bytes; photos
loaded, pre- and de-processed for the ImageNet backbones."""

from __future__ import annotations

import io
import math
import os

import numpy as np
from PIL import Image

PNG_COMPRESS_LEVEL = 6  # fixed so the same pixels always give the same bytes
VIEWABLE_WIDTH = 256
"""Grids narrower than this (pixels) are enlarged, so that a person can look at them."""


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


def grid_png(
    images: np.ndarray,
    columns: int | None = None,
    padding: int = 2,
    min_width: int = VIEWABLE_WIDTH,
) -> bytes:
    """Tile images (n, h, w, c) with values in [0, 1] into one PNG.

    Cells are separated and framed by `padding` black pixels, so the tiled picture is
    columns * (w + padding) + padding wide and rows * (h + padding) + padding high; a
    picture narrower than `min_width` is then enlarged by the smallest whole factor that
    reaches it, each pixel a square block (nearest neighbour: no blur, no new values).
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
    factor = -(-min_width // canvas.shape[1])  # ceiling division
    if factor > 1:
        canvas = canvas.repeat(factor, axis=0).repeat(factor, axis=1)
    return png_bytes(canvas)


# --- Photos for image-optimisation kinds (style transfer, DeepDream) -------------------
# Numpy and Pillow only, so specs can read image sizes at submit without TensorFlow.

VGG_BGR_MEAN = (103.939, 116.779, 123.68)  # ImageNet means per channel, BGR order ("caffe")


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image file, from its header (no pixels are decoded)."""
    with Image.open(path) as image:
        return image.size


def scaled_width(width: int, height: int, target_height: int) -> int:
    """Width keeping the aspect ratio at `target_height`, rounded as Python's round()."""
    return round(width * target_height / height)


def load_rgb(path: str | os.PathLike[str], size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as float32 RGB pixels (height, width, 3) in [0, 255].

    Like keras.utils.load_img + img_to_array: any mode is converted to RGB, and a
    `size` of (height, width) resizes with nearest-neighbour sampling when it differs.
    """
    with Image.open(path) as image:
        image.load()
        rgb = image if image.mode == "RGB" else image.convert("RGB")
    if size is not None and rgb.size != (size[1], size[0]):
        rgb = rgb.resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(rgb, dtype=np.float32)


def vgg_preprocess(rgb: np.ndarray) -> np.ndarray:
    """keras.applications.vgg19.preprocess_input: RGB to BGR, minus the ImageNet means."""
    return np.asarray(rgb, dtype=np.float32)[..., ::-1] - np.array(VGG_BGR_MEAN, np.float32)


def vgg_deprocess(x: np.ndarray) -> np.ndarray:
    """Inverse of `vgg_preprocess` to uint8 RGB (h, w, 3): clipped, then truncated."""
    bgr = np.asarray(x, dtype=np.float32).reshape(x.shape[-3:]) + np.array(VGG_BGR_MEAN, np.float32)
    return np.clip(bgr[..., ::-1], 0, 255).astype(np.uint8)


def inception_preprocess(rgb: np.ndarray) -> np.ndarray:
    """keras.applications.inception_v3.preprocess_input: [0, 255] to [-1, 1]."""
    return np.asarray(rgb, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def inception_deprocess(x: np.ndarray) -> np.ndarray:
    """Inverse of `inception_preprocess` to uint8 RGB (h, w, 3): clipped, then truncated."""
    pixels = np.asarray(x, dtype=np.float32).reshape(x.shape[-3:]) + np.float32(1.0)
    pixels *= np.float32(127.5)
    return np.clip(pixels, 0, 255).astype(np.uint8)
