"""Datasets of the image-to-image translation kinds: pairs of images (A, B) showing the
same thing, for pix2pix, and two unpaired sets of images, domains A and B, for CycleGAN.

Light to import (numpy and Pillow only): the CLI validates specs with it. Loaders return
RGB uint8 arrays (n, size, size, 3), as kinds.datasets does. Layouts of a directory:

- paired, side by side: every image under it (recursively) is A | B, its width twice
  its height, like the public pix2pix sets (facades, edges2shoes). Each half is resized
  to size x size: the halves are square, so nothing is cropped.
- paired, by name: subfolders A/ and B/ whose files pair by their path under A/ or B/
  without the suffix (A/x/1.png with B/x/1.jpg). Each image is centre-cropped to a
  square and resized, as `read_image` does.
- unpaired: subfolders A/ and B/, or trainA/ and trainB/ (CycleGAN's horse2zebra, whose
  testA/ and testB/ are left out), each holding images (recursively); A/ and B/ win
  when both pairs are there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from kinds.contract import JobError, is_remote_folder
from kinds.datasets import (
    DATASET_NAMES,
    IMAGE_FILES,
    MAX_INPUT_BYTES,
    check_image_file,
    glyph_poses,
    image_files,
    is_image_name,
    load_image_folder,
    read_dataset_image,
    reading_dataset_file,
    seeded_subset,
    square_resize,
)
from kinds.paths import check_remote_folder, kind_of, readable, shown

PAIRED_GLYPHS = "glyph-outlines"
UNPAIRED_GLYPHS = "glyph-inks"
PAIRED_NAMES = (PAIRED_GLYPHS,)
UNPAIRED_NAMES = (UNPAIRED_GLYPHS,)
PAIRED_DEFAULT_COUNT = 512
UNPAIRED_DEFAULT_COUNT = 512

PAIRED_HELP = (
    f"{', '.join(PAIRED_NAMES)}, a directory of side-by-side A|B images (width twice the "
    "height, searched recursively), or a directory with A/ and B/ subfolders whose files "
    "pair by name"
)
UNPAIRED_HELP = (
    f"{', '.join(UNPAIRED_NAMES)}, or a directory with A/ and B/ (or trainA/ and trainB/) "
    "subfolders of images"
)

# glyph-outlines: B is a digit drawn with a bold pen, A the rim of B, OUTLINE_PEN wide,
# white on black, so that A's inside is black and filling it gives back B. Fractions of
# the drawing canvas, as GLYPH_STROKE in kinds.datasets (bolder, so the outline shows).
OUTLINE_STROKE = (1 / 32, 1 / 20)
OUTLINE_PEN = 1 / 32  # at least two canvas pixels: one pixel at 16 px
WHITE, BLACK = (255, 255, 255), (0, 0, 0)

# glyph-inks: domain A is chalk on slate, domain B ink on paper (RGB).
CHALK, SLATE = (236, 236, 226), (46, 58, 72)
INK, PAPER = (28, 42, 110), (244, 236, 216)

PAIRED_SIDES = ("A", "B")
UNPAIRED_SIDES = (("A", "B"), ("trainA", "trainB"))
# Streams of the built-ins' random draws (apart from those of kinds.datasets' glyphs).
_OUTLINES_STREAM, _INKS_STREAM = 0x0471E, 0x1265


# --- submit-time checks -----------------------------------------------------------------


def validate_paired_dataset(value: str, context: object = None) -> str:
    """Check a paired dataset at submit, quickly and without TensorFlow.

    Returns a built-in name unchanged, an object-store folder (`s3://...`, listed through
    the Submission in `context`, as `validate_dataset` does), or the directory as an
    absolute path once its layout (module docstring) holds and every image passes
    `check_image_file`. Raises ValueError with a one-line message otherwise.
    """
    if value in PAIRED_NAMES:
        return value
    directory = _directory(value, PAIRED_NAMES, PAIRED_HELP, context)
    if isinstance(directory, str):
        return directory
    for files in _paired_files(directory):
        sizes = [check_image_file(path) for path in files]
        if len(files) == 1:
            _check_side_by_side(files[0], *sizes[0])
    return str(directory)


def validate_unpaired_dataset(value: str, context: object = None) -> str:
    """`validate_paired_dataset` for an unpaired dataset: each of the two sides must hold
    an image, and every image must pass `check_image_file`."""
    if value in UNPAIRED_NAMES:
        return value
    directory = _directory(value, UNPAIRED_NAMES, UNPAIRED_HELP, context)
    if isinstance(directory, str):
        return directory
    for side in _unpaired_sides(directory):
        files = image_files(side)
        if not files:
            raise ValueError(f"dataset {directory}: {side.name}/ holds no {IMAGE_FILES}")
        for path in files:
            check_image_file(path)
    return str(directory)


def _directory(value: str, names: tuple[str, ...], needs: str, context: object) -> Path | str:
    """The directory `value` names, absolute, or the object-store folder it names, checked
    (a str). Refuses the other built-in names, saying which datasets are wanted."""
    if value in PAIRED_NAMES + UNPAIRED_NAMES:
        which = "paired" if value in PAIRED_NAMES else "unpaired"
        raise ValueError(f"dataset {value!r} is the {which} built-in; this needs {needs}")
    if value in DATASET_NAMES:
        raise ValueError(f"dataset {value!r} is a set of single images; this needs {needs}")
    if is_remote_folder(value):
        return check_remote_folder(
            value, context, is_image_name, "dataset", IMAGE_FILES, MAX_INPUT_BYTES
        )
    directory, found = kind_of(value, "dataset")
    if found != "directory":
        raise ValueError(
            f"dataset {shown(value)} is neither one of {', '.join(names)} nor an existing directory"
        )
    return directory


def _check_side_by_side(path: Path, width: int, height: int) -> None:
    if width != 2 * height:
        raise ValueError(
            f"{path}: {width}x{height} pixels, not an A|B pair side by side (width twice "
            "the height)"
        )


# --- layouts ----------------------------------------------------------------------------


def _paired_files(directory: Path) -> list[tuple[Path, ...]]:
    """The pairs of a paired directory, in a stable order: (side-by-side file,) each, or
    (A file, B file). ValueError if there are none or a file has no partner."""
    with readable(str(directory), "dataset"):
        found = [side for side in PAIRED_SIDES if (directory / side).is_dir()]
    if len(found) == 2:
        return _pairs_by_name(directory)
    if found:
        missing = "B" if found == ["A"] else "A"
        raise ValueError(f"dataset {directory} has {found[0]}/ but no {missing}/ subfolder")
    files = image_files(directory)
    if not files:
        raise ValueError(f"directory {directory} holds no {IMAGE_FILES}")
    return [(path,) for path in files]


def _pairs_by_name(directory: Path) -> list[tuple[Path, ...]]:
    a, b = (_by_name(directory / side) for side in PAIRED_SIDES)
    unpaired = sorted([a[name] for name in a.keys() - b] + [b[name] for name in b.keys() - a])
    if unpaired:
        first = unpaired[0].relative_to(directory)
        other = "B" if first.parts[0] == "A" else "A"
        raise ValueError(
            f"dataset {directory}: {first} has no partner in {other}/ ({len(unpaired)} "
            "without a partner in all; files pair by their path under A/ and B/ without the "
            "suffix)"
        )
    if not a:
        raise ValueError(f"dataset {directory}: A/ and B/ hold no {IMAGE_FILES}")
    return [(a[name], b[name]) for name in sorted(a)]


def _by_name(side: Path) -> dict[Path, Path]:
    """The images under `side` by their path under it without the suffix."""
    files: dict[Path, Path] = {}
    for path in image_files(side):
        name = path.relative_to(side).with_suffix("")
        if name in files:
            raise ValueError(
                f"{files[name]} and {path.name} share the name {name}: files pair by their "
                "path without the suffix"
            )
        files[name] = path
    return files


def _unpaired_sides(directory: Path) -> tuple[Path, Path]:
    with readable(str(directory), "dataset"):
        for a, b in UNPAIRED_SIDES:
            if (directory / a).is_dir() and (directory / b).is_dir():
                return directory / a, directory / b
    raise ValueError(
        f"dataset {directory} has neither A/ and B/ nor trainA/ and trainB/ subfolders"
    )


@contextmanager
def _at_load() -> Iterator[None]:
    """A layout found wrong in a job (e.g. a folder synced after submit): JobError."""
    try:
        yield
    except ValueError as exc:
        raise JobError("dataset_invalid", str(exc)) from None


# --- loading ----------------------------------------------------------------------------


def load_pairs(
    dataset: str, size: int, *, seed: int = 0, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The A and B images of a paired dataset, each RGB uint8 (n, size, size, 3), row i
    of A paired with row i of B.

    `limit` caps the pairs (a seed-chosen subset in the original order; for the built-in,
    how many to render, PAIRED_DEFAULT_COUNT by default). Raises JobError
    ("dataset_invalid") for a bad file or layout.
    """
    if dataset == PAIRED_GLYPHS:
        return render_outlines(limit or PAIRED_DEFAULT_COUNT, size, seed)
    with _at_load():
        pairs = _paired_files(Path(dataset))
    pairs = [pairs[index] for index in seeded_subset(len(pairs), limit, seed)]
    a, b = (np.empty((len(pairs), size, size, 3), np.uint8) for _ in PAIRED_SIDES)
    for index, files in enumerate(pairs):
        a[index], b[index] = _read_pair(files, size)
    return a, b


def load_unpaired(
    dataset: str, size: int, *, seed: int = 0, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The A images and the B images of an unpaired dataset (their counts may differ),
    each RGB uint8 (n, size, size, 3).

    `limit` caps each side (a seed-chosen subset in the original order; for the
    built-in, how many to render per side, UNPAIRED_DEFAULT_COUNT by default). Raises
    JobError("dataset_invalid") for a bad file or layout.
    """
    if dataset == UNPAIRED_GLYPHS:
        return render_inks(limit or UNPAIRED_DEFAULT_COUNT, size, seed)
    with _at_load():
        a, b = _unpaired_sides(Path(dataset))
    return load_image_folder(a, size, seed, limit), load_image_folder(b, size, seed, limit)


def _read_pair(files: tuple[Path, ...], size: int) -> tuple[np.ndarray, np.ndarray]:
    if len(files) == 2:
        return read_dataset_image(files[0], size), read_dataset_image(files[1], size)
    path = files[0]
    with reading_dataset_file(path):
        _check_side_by_side(path, *check_image_file(path))
        with Image.open(path) as image:
            image.draft("RGB", (2 * size, size))  # JPEG: decode at a reduced scale
            rgb = image.convert("RGB")
        width, height = rgb.size  # after draft, halved perhaps
        half = width // 2
        a, b = rgb.crop((0, 0, half, height)), rgb.crop((width - half, 0, width, height))
        return np.asarray(square_resize(a, size)), np.asarray(square_resize(b, size))


# --- built-ins --------------------------------------------------------------------------


def render_outlines(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """glyph-outlines: `count` digits as outlines (A) and filled (B) in the same pose,
    grey as RGB uint8 (count, size, size, 3); the same seed gives the same bytes."""
    poses = glyph_poses(
        count, size, np.random.default_rng([seed, _OUTLINES_STREAM]), OUTLINE_STROKE
    )
    pen = max(2, round(poses.canvas * OUTLINE_PEN))
    a, b = (np.empty((count, size, size), np.uint8) for _ in PAIRED_SIDES)
    for index in range(count):
        stroke = int(poses.strokes[index])
        filled = Image.new("L", (poses.canvas, poses.canvas), 0)
        poses.draw(filled, index, 255, stroke)
        outline = filled.copy()
        poses.draw(outline, index, 0, max(0, stroke - pen))  # black inside a pen-wide rim
        a[index], b[index] = poses.place(outline, index), poses.place(filled, index)
    return _tinted(a, WHITE, BLACK), _tinted(b, WHITE, BLACK)


def render_inks(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """glyph-inks: `count` digits in chalk on slate (A) and `count` others, drawn apart,
    in ink on paper (B), as RGB uint8 (count, size, size, 3)."""
    a, b = (
        glyph_poses(count, size, np.random.default_rng([seed, _INKS_STREAM, side])).masks()
        for side in range(2)
    )
    return _tinted(a, CHALK, SLATE), _tinted(b, INK, PAPER)


def _tinted(
    masks: np.ndarray, ink: tuple[int, int, int], background: tuple[int, int, int]
) -> np.ndarray:
    """Grey masks (0 background to 255 stroke) as RGB: `ink` strokes on `background`."""
    coverage = np.linspace(0.0, 1.0, 256)[:, np.newaxis]
    table = np.rint(np.add(background, coverage * np.subtract(ink, background)))
    return table.astype(np.uint8)[masks]  # a lookup: no float copy of the images
