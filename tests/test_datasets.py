"""Datasets (glyphs, Keras sets, image folders), submit-time checks and image grids."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kinds import datasets
from kinds.contract import JobError
from kinds.datasets import (
    check_image_file,
    dataset_channels,
    load_images,
    render_glyphs,
    validate_dataset,
)
from kinds.images import grid_png, grid_shape, to_uint8


def save_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def png_with_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (the pixel data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


# --- glyphs -------------------------------------------------------------------------


def test_glyphs_shapes_ranges_and_labels() -> None:
    images, labels = render_glyphs(400, 28, seed=1)
    assert images.shape == (400, 28, 28, 1) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert labels.shape == (400,) and set(labels.tolist()) == set(range(10))
    assert (images.reshape(400, -1).max(axis=1) > 0.5).all(), "every image shows a digit"
    ink = images.reshape(400, -1).mean(axis=1)
    assert ink[labels == 1].mean() < 0.8 * ink[labels == 8].mean(), "labels match the drawings"


def test_glyphs_are_deterministic_per_seed() -> None:
    first, first_labels = render_glyphs(50, 28, seed=7)
    again, again_labels = render_glyphs(50, 28, seed=7)
    other, _ = render_glyphs(50, 28, seed=8)
    assert np.array_equal(first, again) and np.array_equal(first_labels, again_labels)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_glyphs_any_size(size: int) -> None:
    images, _ = render_glyphs(8, size, seed=0)
    assert images.shape == (8, size, size, 1)
    assert 0.02 < images.mean() < 0.6


def test_glyphs_default_count_and_pen() -> None:
    """2048 digits by default, every one drawn with a pen of one pixel or more."""
    images = load_images("glyphs", 28, seed=0)
    assert images.shape == (datasets.GLYPHS_DEFAULT_COUNT, 28, 28, 1)
    lit = (images > 127).reshape(len(images), -1).sum(axis=1)
    assert lit.min() >= 50, lit.min()  # a pen of at least one pixel (hairlines gave 34)


def test_load_images_glyphs_is_uint8_of_render() -> None:
    pixels = load_images("glyphs", 28, seed=2, limit=20)
    rendered, _ = render_glyphs(20, 28, seed=2)
    assert pixels.dtype == np.uint8
    assert np.array_equal(pixels, np.rint(rendered * 255).astype(np.uint8))


def test_channels() -> None:
    assert [dataset_channels(name) for name in datasets.DATASET_NAMES] == [1, 1, 1, 3]
    assert dataset_channels("/some/folder") == 3


# --- validate_dataset / check_image_file ----------------------------------------------


def test_known_names_pass_unchanged() -> None:
    for name in datasets.DATASET_NAMES:
        assert validate_dataset(name) == name


def test_unknown_name_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="'celeba' is neither one of glyphs, mnist"):
        validate_dataset("celeba")


def test_directory_is_resolved_and_searched_recursively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_png(tmp_path / "faces" / "deep" / "a.PNG", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "faces" / "notes.txt").write_text("not an image, ignored")
    monkeypatch.chdir(tmp_path)
    assert validate_dataset("faces") == str(tmp_path.resolve() / "faces")


def test_empty_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds no image files"):
        validate_dataset(str(tmp_path))


def test_directory_without_images_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("1,2,3\n")
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(ValueError, match="holds no image files"):
        validate_dataset(str(tmp_path))


def test_text_named_png_is_rejected(tmp_path: Path) -> None:
    save_png(tmp_path / "good.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "fake.png").write_text("this is not a PNG")
    with pytest.raises(ValueError, match=r"fake\.png: not an image file"):
        validate_dataset(str(tmp_path))


def test_corrupt_png_is_rejected(tmp_path: Path) -> None:
    path = save_png(tmp_path / "corrupt.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    data = bytearray(path.read_bytes())
    data[data.index(b"IDAT") + 6] ^= 0xFF  # a flipped bit in the pixel data: bad checksum
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupt\.png: corrupt or unreadable image"):
        validate_dataset(str(tmp_path))


def test_truncated_png_is_rejected(tmp_path: Path) -> None:
    path = save_png(tmp_path / "cut.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"cut\.png: corrupt or unreadable image"):
        check_image_file(path)


@pytest.mark.parametrize("side", [30_000, 10_000])  # Pillow's error and warning levels
def test_decompression_bomb_is_rejected(tmp_path: Path, side: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_with_header(side, side))
    assert path.stat().st_size < 200
    with pytest.raises(ValueError, match=r"bomb\.png: refused as a decompression bomb"):
        validate_dataset(str(tmp_path))


def test_image_over_pixel_limit_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(png_with_header(7_000, 7_000))  # 49 MP: under Pillow's limit, over ours
    with pytest.raises(ValueError, match=r"huge\.png: 7000x7000 pixels, over the 40000000-pixel"):
        check_image_file(path)


def test_image_over_byte_limit_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_png(tmp_path / "big.png", np.zeros((8, 8), np.uint8))
    monkeypatch.setattr(datasets, "MAX_INPUT_BYTES", 10)
    with pytest.raises(ValueError, match=r"big\.png: \d+ bytes, over the 10-byte limit"):
        check_image_file(path)


def test_valid_png_and_jpeg_pass(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    check_image_file(save_png(tmp_path / "a.png", pixels))
    Image.fromarray(pixels).save(tmp_path / "b.jpg", quality=90)
    check_image_file(tmp_path / "b.jpg")


# --- image folders and Keras datasets -------------------------------------------------


def test_directory_images_are_centre_cropped_rgb(tmp_path: Path) -> None:
    stripes = np.zeros((20, 60, 3), np.uint8)
    stripes[:, :20, 0] = 255  # red | green | blue: the centre square is all green
    stripes[:, 20:40, 1] = 255
    stripes[:, 40:, 2] = 255
    save_png(tmp_path / "a_stripes.png", stripes)
    save_png(tmp_path / "b_gray.png", np.full((10, 10), 200, np.uint8))
    pixels = load_images(str(tmp_path), 16)
    assert pixels.shape == (2, 16, 16, 3) and pixels.dtype == np.uint8
    assert (pixels[0] == [0, 255, 0]).all()
    assert (pixels[1] == 200).all()


def test_directory_limit_picks_a_seeded_subset(tmp_path: Path) -> None:
    for value in range(10):
        save_png(tmp_path / f"{value}.png", np.full((4, 4), value * 20, np.uint8))
    first = load_images(str(tmp_path), 16, seed=1, limit=4)
    assert first.shape == (4, 16, 16, 3)
    assert np.array_equal(first, load_images(str(tmp_path), 16, seed=1, limit=4))
    assert len(np.unique(first[:, 0, 0, 0])) == 4


def test_directory_with_bad_file_fails_the_job(tmp_path: Path) -> None:
    save_png(tmp_path / "ok.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(JobError) as error:
        load_images(str(tmp_path), 16)
    assert error.value.code == "dataset_invalid" and "bad.jpg" in error.value.message


def fake_keras_data(shape: tuple[int, ...]) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    labels = np.zeros(shape[0], np.uint8)
    return (images, labels), (images[:2], labels[:2])


def test_keras_dataset_is_resized(monkeypatch: pytest.MonkeyPatch) -> None:
    keras = pytest.importorskip("keras")
    data = fake_keras_data((12, 28, 28))
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: data)
    same = load_images("mnist", 28)
    assert same.shape == (12, 28, 28, 1) and np.array_equal(same[..., 0], data[0][0])
    bigger = load_images("mnist", 32, limit=5)
    assert bigger.shape == (5, 32, 32, 1) and bigger.dtype == np.uint8

    colour = fake_keras_data((6, 32, 32, 3))
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: colour)
    assert load_images("cifar10", 64).shape == (6, 64, 64, 3)


def test_keras_dataset_without_network_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    keras = pytest.importorskip("keras")

    def offline() -> None:
        raise Exception("URL fetch failure on https://x/mnist.npz: None -- Name not known")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(JobError) as error:
        load_images("mnist", 28)
    assert error.value.code == "dataset_unavailable"
    assert "'mnist'" in error.value.message and "tf-keras-datasets/mnist.npz" in error.value.message
    assert "\n" not in error.value.message


# --- grids ----------------------------------------------------------------------------


def test_grid_png_layout_and_modes() -> None:
    images = np.zeros((5, 8, 6, 1), np.float32)
    images[0] = 1.0
    grid = Image.open(io.BytesIO(grid_png(images, min_width=0)))
    assert grid_shape(5) == (2, 3)
    assert grid.mode == "L" and grid.size == (3 * (6 + 2) + 2, 2 * (8 + 2) + 2)
    pixels = np.asarray(grid)
    assert (pixels[2:10, 2:8] == 255).all() and pixels.sum() == 255 * 8 * 6

    colour = np.full((4, 5, 5, 3), 0.5)
    colour = Image.open(io.BytesIO(grid_png(colour, columns=4, padding=0, min_width=0)))
    assert colour.mode == "RGB" and colour.size == (20, 5)
    assert (np.asarray(colour) == 128).all()


def test_small_grids_are_enlarged_to_be_viewable() -> None:
    """A 26 px wide grid becomes 260 px (factor 10), each pixel a 10 x 10 block of the same
    value; a grid already wide enough keeps its size."""
    images = np.random.default_rng(4).random((5, 8, 6, 1)).astype(np.float32)
    native = np.asarray(Image.open(io.BytesIO(grid_png(images, min_width=0))))
    shown = np.asarray(Image.open(io.BytesIO(grid_png(images))))
    assert native.shape == (22, 26) and shown.shape == (220, 260)
    assert np.array_equal(shown, native.repeat(10, axis=0).repeat(10, axis=1))
    wide = np.zeros((4, 64, 64, 1), np.float32)
    assert Image.open(io.BytesIO(grid_png(wide, columns=4))).size == (4 * 66 + 2, 66 + 2)


def test_grid_png_is_deterministic() -> None:
    images = np.random.default_rng(3).random((9, 8, 8, 3)).astype(np.float32)
    assert grid_png(images) == grid_png(images.copy())


def test_to_uint8_clips_and_handles_nan() -> None:
    values = np.array([-0.5, 0.0, 0.5, 1.0, 2.0, np.nan], np.float32)
    assert to_uint8(values).tolist() == [0, 0, 128, 255, 255, 0]
