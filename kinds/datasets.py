"""Training image sets: built-in digit glyphs, Keras datasets and folders of images.

Importing this module is light (numpy and Pillow only): the CLI validates specs with
`validate_dataset` without TensorFlow. Keras is imported only to load a Keras dataset.

Every loader returns uint8 pixels shaped (n, size, size, channels); kinds scale them to
[0, 1] themselves (keeping uint8 in memory is four times smaller than float32).
"""

from __future__ import annotations

import functools
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.errors import detail
from kinds.contract import JobError, is_remote_folder
from kinds.paths import check_remote_folder, kind_of, listing, shown

GLYPHS = "glyphs"
KERAS_DATASETS: dict[str, tuple[int, str]] = {
    # name: (channels, what keras.datasets.<name>.load_data() downloads into ~/.keras/datasets/)
    "mnist": (1, "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"),
    "fashion_mnist": (
        1,
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
        "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (into fashion-mnist/)",
    ),
    "cifar10": (3, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
}
DATASET_NAMES = (GLYPHS, *KERAS_DATASETS)
GLYPHS_DEFAULT_COUNT = 2048
# Classes of the labelled datasets: the digits 0-9 of glyphs and mnist, the ten clothing
# classes of fashion_mnist and the ten object classes of cifar10. Image folders have none.
DATASET_CLASSES: dict[str, int] = {name: 10 for name in DATASET_NAMES}

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
# Limits for user-supplied image files, checked before any pixel is decoded. Pillow's
# own decompression-bomb limit (Image.MAX_IMAGE_PIXELS, about 89 megapixels) stays on too.
MAX_INPUT_PIXELS = 40_000_000
MAX_INPUT_BYTES = 50 * 1024 * 1024
IMAGE_FILES = f"image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
"""What a folder of images must hold, for error messages."""

# Random variation of the rendered digits, as fractions of the drawing canvas: about as
# varied as MNIST's handwriting in size and slant, with a pen of one or two pixels at
# 28 px, so that a DCGAN draws recognisable digits within a few hundred steps.
GLYPH_FONT_SIZE = (0.85, 1.0)
GLYPH_MAX_ROTATION = 5.0  # degrees, either way
GLYPH_MAX_SHIFT = 0.08
GLYPH_STROKE = (1 / 56, 1 / 28)  # extra stroke width around the font's own


def dataset_channels(dataset: str) -> int:
    """Colour channels of a dataset: 1 for the digit sets, 3 for cifar10 and image folders."""
    if dataset == GLYPHS:
        return 1
    if dataset in KERAS_DATASETS:
        return KERAS_DATASETS[dataset][0]
    return 3


def dataset_classes(dataset: str) -> int | None:
    """Number of classes of a labelled dataset; None for a folder of images (no labels)."""
    return DATASET_CLASSES.get(dataset)


def validate_labelled_dataset(value: str) -> str:
    """`validate_dataset`, and the dataset must have class labels (not an image folder)."""
    value = value if is_remote_folder(value) else validate_dataset(value)
    if dataset_classes(value) is None:
        names = ", ".join(DATASET_CLASSES)
        raise ValueError(
            f"dataset {value!r} is a folder of images without class labels; "
            f"a labelled dataset is needed ({names})"
        )
    return value


def check_labels(labels: list[int], classes: int, what: str = "labels") -> list[int]:
    """Class labels must be in 0..classes-1; raises ValueError with one line otherwise."""
    wrong = sorted({label for label in labels if not 0 <= label < classes})
    if wrong:
        listed = ", ".join(str(label) for label in wrong)
        raise ValueError(f"{what} {listed} outside the dataset's classes 0..{classes - 1}")
    return labels


def validate_dataset(value: str, context: object = None) -> str:
    """Check a dataset at submit time, quickly and without TensorFlow.

    Returns the known name unchanged, or the directory as an absolute path. A directory
    must hold at least one image and every image file in it must pass `check_image_file`.
    An object-store folder (`s3://...`, listed through the Submission in `context`) must
    hold an image no larger than MAX_INPUT_BYTES; the worker checks each file once synced.
    Raises ValueError with a one-line message otherwise.
    """
    if value in DATASET_NAMES:
        return value
    if is_remote_folder(value):
        return check_remote_folder(
            value, context, is_image_name, "dataset", IMAGE_FILES, MAX_INPUT_BYTES
        )
    directory, found = kind_of(value, "dataset")
    if found != "directory":
        names = ", ".join(DATASET_NAMES)
        raise ValueError(
            f"dataset {shown(value)} is neither one of {names} nor an existing directory"
        )
    files = image_files(directory)
    if not files:
        raise ValueError(f"directory {directory} holds no {IMAGE_FILES}")
    for path in files:
        check_image_file(path)
    return str(directory)


def image_files(directory: Path) -> list[Path]:
    """Image files under `directory`, recursively, by suffix, in a stable (sorted) order."""
    return listing(directory, lambda path: is_image_name(path.name), "dataset")


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def check_image_file(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Reject a file that is not a safe, readable image, with a one-line ValueError;
    return its (width, height).

    Reads the header and verifies the file structure (Image.verify) without decoding
    pixels: too large on disk, too many pixels, decompression bombs, unknown formats
    and corrupt files (e.g. bad PNG checksums) are refused.
    """
    path = Path(path)
    try:
        status = path.stat()
    except OSError as exc:
        raise ValueError(f"{shown(str(path))}: cannot read the file ({exc.strerror})") from None
    if stat.S_ISDIR(status.st_mode):
        raise ValueError(f"{shown(str(path))}: a directory, not an image file")
    size = status.st_size
    if size > MAX_INPUT_BYTES:
        raise ValueError(f"{path}: {size} bytes, over the {MAX_INPUT_BYTES}-byte limit per image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height <= MAX_INPUT_PIXELS:
                    image.verify()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{path}: refused as a decompression bomb ({detail(exc)})") from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file Pillow can read") from None
    except Exception as exc:  # Pillow raises many types (SyntaxError, OSError, ...) on bad data
        raise ValueError(f"{path}: corrupt or unreadable image ({detail(exc)})") from None
    if width * height > MAX_INPUT_PIXELS:
        raise ValueError(
            f"{path}: {width}x{height} pixels, over the {MAX_INPUT_PIXELS}-pixel limit per image"
        )
    return width, height


def load_images(
    dataset: str, image_size: int, *, seed: int = 0, limit: int | None = None
) -> np.ndarray:
    """Training images of `dataset` as uint8 (n, image_size, image_size, channels).

    `limit` caps the number of images (a seed-chosen subset; for glyphs, how many to
    render, GLYPHS_DEFAULT_COUNT by default). Raises JobError("dataset_unavailable")
    when a Keras dataset is neither cached nor downloadable, JobError("dataset_invalid")
    when an image folder has bad or no images.
    """
    if dataset == GLYPHS:
        return _render_glyphs(limit or GLYPHS_DEFAULT_COUNT, image_size, seed)[0]
    if dataset in KERAS_DATASETS:
        return _load_keras_dataset(dataset, image_size, seed, limit)[0]
    return load_image_folder(Path(dataset), image_size, seed, limit)


def load_labelled_images(
    dataset: str, image_size: int, *, seed: int = 0, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`load_images` of a labelled dataset, with the class of each image (int32, (n,)).

    The images are the ones `load_images` gives for the same arguments. Raises
    JobError("dataset_unlabelled") for an image folder.
    """
    if dataset == GLYPHS:
        pixels, labels = _render_glyphs(limit or GLYPHS_DEFAULT_COUNT, image_size, seed)
    elif dataset in KERAS_DATASETS:
        pixels, labels = _load_keras_dataset(dataset, image_size, seed, limit)
    else:
        raise JobError("dataset_unlabelled", f"dataset {dataset!r} has no class labels")
    return pixels, labels.astype(np.int32)


def render_glyphs(count: int, image_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` digit images as float32 (count, size, size, 1) in [0, 1], and their labels.

    White digits on black drawn with Pillow's bundled font under random size, rotation,
    shift and stroke width; the same seed always gives the same images.
    """
    pixels, labels = _render_glyphs(count, image_size, seed)
    return pixels.astype(np.float32) / 255.0, labels


def _render_glyphs(count: int, image_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    poses = glyph_poses(count, image_size, np.random.default_rng([seed, 0x61795]))
    return poses.masks()[..., np.newaxis], poses.labels


@dataclass(frozen=True)
class GlyphPoses:
    """Random digits and their poses (font size, rotation, shift, stroke) for `count`
    glyphs, in pixels of the drawing canvas; the renderers of image_pairs share them."""

    image_size: int
    canvas: int
    labels: np.ndarray
    font_sizes: np.ndarray
    angles: np.ndarray
    shifts: np.ndarray
    strokes: np.ndarray

    def draw(self, image: Image.Image, index: int, fill: int, stroke: int) -> None:
        """Write digit `index` upright at the centre of `image` with `stroke` extra width."""
        ImageDraw.Draw(image).text(
            (self.canvas / 2, self.canvas / 2),
            str(self.labels[index]),
            fill=fill,
            font=_font(int(self.font_sizes[index])),
            anchor="mm",
            stroke_width=stroke,
            stroke_fill=fill,
        )

    def place(self, image: Image.Image, index: int) -> np.ndarray:
        """`image` rotated and shifted into pose `index`, at image_size, as an array."""
        image = image.rotate(
            self.angles[index],
            resample=Image.Resampling.BILINEAR,
            translate=tuple(self.shifts[index]),
        )
        if self.canvas != self.image_size:
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BOX)
        return np.asarray(image)

    def masks(self) -> np.ndarray:
        """Every glyph, white on black, as uint8 (count, image_size, image_size)."""
        pixels = np.empty((len(self.labels), self.image_size, self.image_size), dtype=np.uint8)
        for index in range(len(self.labels)):
            image = Image.new("L", (self.canvas, self.canvas), 0)
            self.draw(image, index, 255, int(self.strokes[index]))
            pixels[index] = self.place(image, index)
        return pixels


def glyph_poses(
    count: int,
    image_size: int,
    rng: np.random.Generator,
    stroke: tuple[float, float] = GLYPH_STROKE,
) -> GlyphPoses:
    """`count` random digits and poses drawn from `rng`; `stroke` as in GLYPH_STROKE."""
    # Small images are drawn at twice the size and averaged down, for smoother strokes.
    canvas = image_size * 2 if image_size < 64 else image_size
    labels = rng.integers(0, 10, count)
    font_sizes = np.rint(rng.uniform(*GLYPH_FONT_SIZE, count) * canvas).astype(int)
    angles = rng.uniform(-GLYPH_MAX_ROTATION, GLYPH_MAX_ROTATION, count)
    shifts = rng.uniform(-GLYPH_MAX_SHIFT, GLYPH_MAX_SHIFT, (count, 2)) * canvas
    thinnest, thickest = (max(1, round(canvas * width)) for width in stroke)
    strokes = rng.integers(thinnest, thickest + 1, count)
    return GlyphPoses(image_size, canvas, labels, font_sizes, angles, shifts, strokes)


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _load_keras_dataset(
    name: str, image_size: int, seed: int, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    import keras

    try:
        (images, labels), _ = getattr(keras.datasets, name).load_data()
    except Exception as exc:  # keras wraps every download failure in a bare Exception
        source = KERAS_DATASETS[name][1]
        raise JobError(
            "dataset_unavailable",
            f"dataset {name!r} is not in ~/.keras/datasets/ and could not be downloaded "
            f"from {source} ({detail(exc)})",
        ) from None
    if images.ndim == 3:
        images = images[..., np.newaxis]
    subset = seeded_subset(len(images), limit, seed)
    images, labels = images[subset], np.asarray(labels).reshape(-1)[subset]  # cifar10: (n, 1)
    if images.shape[1:3] == (image_size, image_size):
        return np.ascontiguousarray(images), labels
    return np.stack([_resize_array(image, image_size) for image in images]), labels


def load_image_folder(
    directory: Path, image_size: int, seed: int = 0, limit: int | None = None
) -> np.ndarray:
    """The images under `directory` as RGB uint8 (n, image_size, image_size, 3), a
    seed-chosen subset of at most `limit`; JobError("dataset_invalid") for a bad file."""
    files = image_files(directory) if directory.is_dir() else []
    if not files:
        raise JobError("dataset_invalid", f"no image files in {directory}")
    files = [files[index] for index in seeded_subset(len(files), limit, seed)]
    pixels = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    for index, path in enumerate(files):
        pixels[index] = read_dataset_image(path, image_size)
    return pixels


def read_dataset_image(path: Path, size: int) -> np.ndarray:
    """`read_image` of a dataset's file in a job, checked first (`reading_dataset_file`)."""
    with reading_dataset_file(path):
        check_image_file(path)
        return read_image(path, size)


@contextmanager
def reading_dataset_file(path: Path) -> Iterator[None]:
    """In a job, a dataset file that fails its check or its decoding: JobError
    ("dataset_invalid") with one line naming it."""
    try:
        yield
    except ValueError as exc:
        raise JobError("dataset_invalid", str(exc)) from None
    except Exception as exc:  # truncated data only shows when decoding
        raise JobError("dataset_invalid", f"{path}: cannot decode ({detail(exc)})") from None


def read_image(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """An image file as RGB uint8 (size, size, 3): centre square crop, then resize.

    Like Keras' smart_resize: the largest centred square is kept, so nothing is squashed.
    Call `check_image_file` first on untrusted files.
    """
    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when possible
        return np.asarray(square_resize(image.convert("RGB"), size))


def square_resize(image: Image.Image, size: int) -> Image.Image:
    """Crop the largest centred square of `image` and resize it to size x size."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    # Crop first: resizing with a box would blend in pixels from outside the square.
    square = image.crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.BILINEAR)


def _resize_array(image: np.ndarray, size: int) -> np.ndarray:
    squeeze = image.shape[2] == 1
    resized = np.asarray(square_resize(Image.fromarray(image[..., 0] if squeeze else image), size))
    return resized[..., np.newaxis] if squeeze else resized


def seeded_subset(count: int, limit: int | None, seed: int) -> np.ndarray:
    """Indices of a seed-chosen subset of at most `limit` items, in their original order."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng([seed, 0x5B5E7]).permutation(count)[:limit])
