"""Datasets of the image-to-image kinds: the built-in glyph pairs and inks, paired and
unpaired directories, and their submit-time and load-time refusals."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kinds import image_pairs
from kinds.contract import JobError, RemoteFile, Submission
from kinds.datasets import DATASET_NAMES
from kinds.image_pairs import (
    CHALK,
    INK,
    PAIRED_GLYPHS,
    PAPER,
    SLATE,
    UNPAIRED_GLYPHS,
    load_pairs,
    load_unpaired,
    validate_paired_dataset,
    validate_unpaired_dataset,
)
from tests.fixtures.data import (
    make_bad_images,
    random_pairs,
    write_image_folder,
    write_pairs_by_name,
    write_side_by_side,
)

VALIDATORS = [validate_paired_dataset, validate_unpaired_dataset]


def refused(validate: object, value: str, match: str, context: object = None) -> str:
    """The one-line message with which `validate` refuses `value`."""
    assert callable(validate)
    with pytest.raises(ValueError, match=match) as error:
        validate(value, context)
    assert "\n" not in str(error.value)
    return str(error.value)


def failed_load(load: object, dataset: Path, match: str) -> None:
    assert callable(load)
    with pytest.raises(JobError, match=match) as error:
        load(str(dataset), 16)
    assert error.value.code == "dataset_invalid" and "\n" not in error.value.message


def dilated(mask: np.ndarray, pixels: int) -> np.ndarray:
    """`mask` (n, h, w) grown by `pixels` in every direction (a square pen)."""
    grown = np.pad(mask, ((0, 0), (pixels, pixels), (pixels, pixels)))
    size = mask.shape[1]
    out = np.zeros_like(mask)
    for dy in range(2 * pixels + 1):
        for dx in range(2 * pixels + 1):
            out |= grown[:, dy : dy + size, dx : dx + size]
    return out


def mean_colour(images: np.ndarray) -> np.ndarray:
    return images.reshape(-1, 3).mean(axis=0)


def commonest_colour(images: np.ndarray) -> tuple[int, ...]:
    colours, counts = np.unique(images.reshape(-1, 3), axis=0, return_counts=True)
    return tuple(int(value) for value in colours[counts.argmax()])


# --- glyph-outlines -------------------------------------------------------------------


def test_outlines_are_deterministic_rgb_pairs() -> None:
    a, b = load_pairs(PAIRED_GLYPHS, 32, seed=1, limit=40)
    assert a.shape == b.shape == (40, 32, 32, 3) and a.dtype == b.dtype == np.uint8
    assert (a[..., :1] == a).all() and (b[..., :1] == b).all(), "grey as RGB"
    again = load_pairs(PAIRED_GLYPHS, 32, seed=1, limit=40)
    assert a.tobytes() == again[0].tobytes() and b.tobytes() == again[1].tobytes()
    assert not np.array_equal(a, load_pairs(PAIRED_GLYPHS, 32, seed=2, limit=40)[0])


def test_outline_is_the_rim_of_the_filled_digit() -> None:
    """B is filled: more lit than A; A's lit pixels lie on B (grown by a pixel), and B is
    lit where A is dark inside the outline."""
    a, b = load_pairs(PAIRED_GLYPHS, 64, seed=3, limit=64)
    outline, filled = a[..., 0] > 127, b[..., 0] > 127
    lit_a, lit_b = outline.sum(axis=(1, 2)), filled.sum(axis=(1, 2))
    assert (lit_a > 0).all() and (lit_b > 1.5 * lit_a).all()
    assert not (outline & ~dilated(filled, 1)).any()
    assert ((filled & ~outline).sum(axis=(1, 2)) > lit_a / 2).all(), "A is hollow"


@pytest.mark.parametrize("size", [16, 256])
def test_outlines_at_the_smallest_and_largest_sizes(size: int) -> None:
    a, b = load_pairs(PAIRED_GLYPHS, size, limit=4)
    assert a.shape == b.shape == (4, size, size, 3)
    assert ((a[..., 0] > 127).sum(axis=(1, 2)) < (b[..., 0] > 127).sum(axis=(1, 2))).all()


def test_built_ins_render_their_default_counts_quickly() -> None:
    start = time.perf_counter()
    a, b = load_pairs(PAIRED_GLYPHS, 64)
    inks_a, inks_b = load_unpaired(UNPAIRED_GLYPHS, 64)
    assert len(a) == len(b) == image_pairs.PAIRED_DEFAULT_COUNT
    assert len(inks_a) == len(inks_b) == image_pairs.UNPAIRED_DEFAULT_COUNT
    assert time.perf_counter() - start < 10  # about 0.6 s on one core


# --- glyph-inks ------------------------------------------------------------------------


def test_inks_look_like_their_domains() -> None:
    """Chalk on slate (A), ink on paper (B): the background is the commonest colour, the
    mean colour lies near it, and the strokes reach the ink's colour."""
    a, b = load_unpaired(UNPAIRED_GLYPHS, 32, seed=1, limit=64)
    assert a.shape == b.shape == (64, 32, 32, 3) and a.dtype == np.uint8
    assert commonest_colour(a) == SLATE and commonest_colour(b) == PAPER
    for images, background, other in ((a, SLATE, PAPER), (b, PAPER, SLATE)):
        mean = mean_colour(images)
        assert np.abs(mean - background).max() < 45
        assert np.linalg.norm(mean - background) < np.linalg.norm(mean - other) / 3
    brightest = a.reshape(-1, 3)[a.reshape(-1, 3).sum(axis=1).argmax()]
    darkest = b.reshape(-1, 3)[b.reshape(-1, 3).sum(axis=1).argmin()]
    assert np.abs(brightest.astype(int) - CHALK).max() <= 2
    assert np.abs(darkest.astype(int) - INK).max() <= 2


def test_inks_sides_are_independent_draws() -> None:
    a, b = load_unpaired(UNPAIRED_GLYPHS, 32, seed=5, limit=32)
    again = load_unpaired(UNPAIRED_GLYPHS, 32, seed=5, limit=32)
    assert a.tobytes() == again[0].tobytes() and b.tobytes() == again[1].tobytes()
    strokes_a = a[..., 0] > (SLATE[0] + CHALK[0]) / 2
    strokes_b = b[..., 0] < (INK[0] + PAPER[0]) / 2
    overlap = (strokes_a & strokes_b).sum() / np.maximum(strokes_a, strokes_b).sum()
    assert overlap < 0.5, "different digits in different poses"


# --- paired directories ----------------------------------------------------------------


def test_side_by_side_halves_round_trip(tmp_path: Path) -> None:
    a, b = random_pairs(5, side=16, seed=1)
    write_side_by_side(tmp_path / "pairs" / "train", a, b)  # searched recursively
    assert validate_paired_dataset(str(tmp_path / "pairs")) == str(tmp_path / "pairs")
    loaded_a, loaded_b = load_pairs(str(tmp_path / "pairs"), 16)
    assert np.array_equal(loaded_a, a) and np.array_equal(loaded_b, b)


def test_side_by_side_halves_are_resized_not_cropped(tmp_path: Path) -> None:
    """A 40x20 file whose left half is red with a blue last column: the column is kept."""
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20, 0] = 255
    pixels[:, 19] = (0, 0, 255)
    pixels[:, 20:, 1] = 255
    Image.fromarray(pixels).save(tmp_path / "pair.png")
    a, b = load_pairs(str(tmp_path), 32)
    assert a.shape == (1, 32, 32, 3)
    assert (a[0, :, 0] == (255, 0, 0)).all() and a[0, :, -1, 2].min() > 200
    assert (b[0] == (0, 255, 0)).all()


def test_pairs_by_name_round_trip(tmp_path: Path) -> None:
    """A/x/NNN.png pairs with B/x/NNN.bmp: by the path without the suffix."""
    a, b = random_pairs(4, side=16, seed=2)
    write_pairs_by_name(tmp_path / "set", a, b)
    for side, suffix in (("A", ".png"), ("B", ".bmp")):
        (tmp_path / "set" / side / "x").mkdir()
        shutil.move(tmp_path / "set" / side / f"003{suffix}", tmp_path / "set" / side / "x")
    assert validate_paired_dataset(str(tmp_path / "set")) == str(tmp_path / "set")
    loaded_a, loaded_b = load_pairs(str(tmp_path / "set"), 16)
    assert np.array_equal(loaded_a, a) and np.array_equal(loaded_b, b)


def test_pairs_limit_is_a_seeded_subset_in_order(tmp_path: Path) -> None:
    """Each A is grey v, its B grey 255 - v: pairs stay together, in file order."""
    values = np.arange(10, dtype=np.uint8) * 20
    a = np.broadcast_to(values[:, None, None, None], (10, 8, 8, 3)).copy()
    write_pairs_by_name(tmp_path, a, 255 - a)
    first_a, first_b = load_pairs(str(tmp_path), 8, seed=1, limit=4)
    assert first_a.shape == first_b.shape == (4, 8, 8, 3)
    chosen = first_a[:, 0, 0, 0]
    assert len(set(chosen)) == 4 and (np.diff(chosen.astype(int)) > 0).all()
    assert np.array_equal(first_b[:, 0, 0, 0], 255 - chosen)
    again_a, _ = load_pairs(str(tmp_path), 8, seed=1, limit=4)
    assert np.array_equal(first_a, again_a)
    assert any(
        not np.array_equal(load_pairs(str(tmp_path), 8, seed=seed, limit=4)[0], first_a)
        for seed in range(2, 6)
    )


def test_odd_width_is_refused_naming_the_file(tmp_path: Path) -> None:
    write_side_by_side(tmp_path, *random_pairs(2, side=16))
    Image.new("RGB", (30, 16)).save(tmp_path / "odd.png")
    refused(validate_paired_dataset, str(tmp_path), r"odd\.png: 30x16 pixels, not an A\|B pair")
    failed_load(load_pairs, tmp_path, r"odd\.png: 30x16 pixels")


def test_missing_partner_is_refused_naming_it_and_counting(tmp_path: Path) -> None:
    write_pairs_by_name(tmp_path, *random_pairs(3, side=8))
    (tmp_path / "A" / "001.png").unlink()
    message = refused(validate_paired_dataset, str(tmp_path), r"B/001\.bmp has no partner in A/")
    assert "(1 without a partner in all; files pair by their path under A/ and B/" in message
    Image.new("RGB", (8, 8)).save(tmp_path / "A" / "extra.png")
    refused(validate_paired_dataset, str(tmp_path), r"A/extra\.png has no partner in B/ \(2 ")
    failed_load(load_pairs, tmp_path, r"A/extra\.png has no partner")


def test_one_name_twice_on_a_side_is_refused(tmp_path: Path) -> None:
    write_pairs_by_name(tmp_path, *random_pairs(2, side=8))
    Image.new("RGB", (8, 8)).save(tmp_path / "A" / "000.jpg")
    refused(validate_paired_dataset, str(tmp_path), r"A/000\.jpg and 000\.png share the name 000")


def test_paired_folder_needs_both_sides_and_images(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "half" / "A", 2)
    refused(validate_paired_dataset, str(tmp_path / "half"), "has A/ but no B/ subfolder")
    (tmp_path / "empty" / "A").mkdir(parents=True)
    (tmp_path / "empty" / "B").mkdir()
    refused(validate_paired_dataset, str(tmp_path / "empty"), "A/ and B/ hold no image files")
    (tmp_path / "none").mkdir()
    refused(validate_paired_dataset, str(tmp_path / "none"), "holds no image files")


# --- unpaired directories --------------------------------------------------------------


@pytest.mark.parametrize("sides", [("A", "B"), ("trainA", "trainB")])
def test_unpaired_folders_round_trip(tmp_path: Path, sides: tuple[str, str]) -> None:
    write_image_folder(tmp_path / sides[0], 3, size=(16, 16), seed=1)
    write_image_folder(tmp_path / sides[1] / "deep", 2, size=(16, 16), seed=2)
    write_image_folder(tmp_path / "testA", 4)  # horse2zebra's test split: not trained on
    assert validate_unpaired_dataset(str(tmp_path)) == str(tmp_path)
    a, b = load_unpaired(str(tmp_path), 16)
    assert a.shape == (3, 16, 16, 3) and b.shape == (2, 16, 16, 3)
    assert np.array_equal(a[0], np.asarray(Image.open(tmp_path / sides[0] / "0.png")))
    assert np.array_equal(b[1], np.asarray(Image.open(tmp_path / sides[1] / "deep" / "1.png")))


def test_unpaired_limit_caps_each_side(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "A", 5, seed=1)
    write_image_folder(tmp_path / "B", 2, seed=2)
    a, b = load_unpaired(str(tmp_path), 16, seed=3, limit=3)
    assert len(a) == 3 and len(b) == 2
    assert np.array_equal(a, load_unpaired(str(tmp_path), 16, seed=3, limit=3)[0])
    assert load_unpaired(UNPAIRED_GLYPHS, 16, limit=7)[1].shape == (7, 16, 16, 3)


def test_unpaired_side_without_images_is_refused(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "trainA", 2)
    (tmp_path / "trainB").mkdir()
    (tmp_path / "trainB" / "notes.txt").write_text("no pictures")
    refused(validate_unpaired_dataset, str(tmp_path), r"trainB/ holds no image files \(\.bmp")
    failed_load(load_unpaired, tmp_path, "no image files in")


def test_unpaired_folder_without_sides_is_refused(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "A", 2)
    write_image_folder(tmp_path / "other", 2)
    refused(validate_unpaired_dataset, str(tmp_path), "neither A/ and B/ nor trainA/ and trainB/")
    failed_load(load_unpaired, tmp_path, "neither A/ and B/")


# --- refusals common to both -----------------------------------------------------------


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return make_bad_images(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("bad", ["text", "corrupt", "bomb", "large"])
@pytest.mark.parametrize("layout", ["side by side", "by name", "unpaired"])
def test_bad_images_are_refused(
    tmp_path: Path, bad_images: dict[str, tuple[Path, str]], bad: str, layout: str
) -> None:
    path, expected = bad_images[bad]
    if layout == "side by side":
        write_side_by_side(tmp_path, *random_pairs(1, side=8))
        shutil.copy(path, tmp_path / "zz.png")
    else:
        write_pairs_by_name(tmp_path, *random_pairs(1, side=8))
        shutil.copy(path, tmp_path / "B" / "000.bmp")
    validate = validate_unpaired_dataset if layout == "unpaired" else validate_paired_dataset
    refused(validate, str(tmp_path), rf"(zz\.png|000\.bmp): .*{re.escape(expected)}")


def test_corrupt_image_fails_the_load(
    tmp_path: Path, bad_images: dict[str, tuple[Path, str]]
) -> None:
    write_side_by_side(tmp_path, *random_pairs(2, side=8))
    shutil.copy(bad_images["corrupt"][0], tmp_path / "001.png")
    failed_load(load_pairs, tmp_path, r"001\.png: corrupt or unreadable image")
    write_pairs_by_name(tmp_path / "sides", *random_pairs(2, side=8))
    shutil.copy(bad_images["text"][0], tmp_path / "sides" / "A" / "000.png")
    failed_load(load_unpaired, tmp_path / "sides", r"000\.png: not an image file")


def test_built_in_of_the_other_kind_is_refused_naming_the_right_one() -> None:
    message = refused(validate_paired_dataset, UNPAIRED_GLYPHS, "'glyph-inks' is the unpaired")
    assert "this needs glyph-outlines, a directory of side-by-side A|B images" in message
    message = refused(validate_unpaired_dataset, PAIRED_GLYPHS, "'glyph-outlines' is the paired")
    assert "this needs glyph-inks, or a directory with A/ and B/" in message


@pytest.mark.parametrize("validate", VALIDATORS)
def test_names(validate: object) -> None:
    assert callable(validate)
    own = PAIRED_GLYPHS if validate is validate_paired_dataset else UNPAIRED_GLYPHS
    assert validate(own) == own
    for name in DATASET_NAMES:
        refused(validate, name, f"'{name}' is a set of single images; this needs {own}")


@pytest.mark.parametrize("validate", VALIDATORS)
def test_unknown_name_and_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, validate: object
) -> None:
    assert callable(validate)
    monkeypatch.chdir(tmp_path)
    refused(validate, "facades", "'facades' is neither one of glyph-")
    write_pairs_by_name(tmp_path / "facades", *random_pairs(2, side=8))
    assert validate("facades") == str(tmp_path.resolve() / "facades")


@pytest.mark.parametrize("validate", VALIDATORS)
def test_object_store_folder(validate: object) -> None:
    refused(validate, "s3://bucket/pairs", "an object-store folder cannot be checked here")
    listed = [RemoteFile("A/1.png", 100), RemoteFile("B/1.png", 100)]
    store = Submission(outputs_of=lambda reference, role: None, list_folder=lambda url: listed)
    assert callable(validate) and validate("s3://bucket/pairs/", store) == "s3://bucket/pairs"
    empty = Submission(outputs_of=lambda reference, role: None, list_folder=lambda url: [])
    refused(validate, "s3://bucket/pairs", "holds no image files", empty)
