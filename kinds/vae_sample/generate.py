"""Rendering of the vae-sample kind. Imports Keras: loaded by `run` only."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from kinds.contract import Checkpoint, JobContext, JobError
from kinds.datasets import load_images, load_labelled_images
from kinds.images import grid_png, png_bytes, to_uint8
from kinds.sampling import gif_bytes, latent_grid, load_model, model_path, predict, walk
from kinds.seeds import SamplingStream
from kinds.vae_sample import Spec

if TYPE_CHECKING:
    import keras

LUMINANCE = np.array([0.299, 0.587, 0.114], np.float32)  # RGB -> grey (ITU-R 601)


def generate(spec: Spec, ctx: JobContext) -> None:
    decoder = load_model(model_path(ctx, spec.model, "decoder.keras"))
    latent_dim = int(decoder.inputs[0].shape[-1])
    if spec.mode == "grid":
        _grid(spec, ctx, decoder, latent_dim)
    elif spec.mode == "walk":
        _walk(spec, ctx, decoder, latent_dim)
    else:
        encoder = load_model(model_path(ctx, spec.model, "encoder.keras"))
        _concept(spec, ctx, encoder, decoder)
    ctx.progress(1, 1)
    ctx.boundary(1, lambda: Checkpoint(step=1, arrays={}, meta={}))


def _grid(spec: Spec, ctx: JobContext, decoder: keras.Model, latent_dim: int) -> None:
    if max(spec.grid_dims) >= latent_dim:
        raise _bad(
            f"grid_dims {list(spec.grid_dims)} do not exist in a {latent_dim}-D latent space"
        )
    low, high = spec.grid_range
    points = latent_grid(spec.grid_size, low, high, latent_dim, spec.grid_dims)
    png = grid_png(predict(decoder, points), columns=spec.grid_size, padding=0)
    ctx.save_output("grid", "latent_grid.png", png)


def _walk(spec: Spec, ctx: JobContext, decoder: keras.Model, latent_dim: int) -> None:
    if spec.start is not None and spec.end is not None:
        for name, point in (("start", spec.start), ("end", spec.end)):
            if len(point) != latent_dim:
                raise _bad(f"{name} has {len(point)} values, the latent space {latent_dim}")
        ends = np.array([spec.start, spec.end], np.float64)
    else:
        ends = np.random.default_rng([spec.seed, SamplingStream.WALK]).standard_normal(
            (2, latent_dim)
        )
    frames = predict(decoder, walk(ends[0], ends[1], spec.frames, spherical=False))
    for index, frame in enumerate(to_uint8(frames)):
        data = png_bytes(frame)
        ctx.save_output("walk", f"frame_{index:04d}.png", data)
    gif = gif_bytes(frames, spec.frame_ms)
    ctx.save_output("walk", "walk.gif", gif)


def _concept(spec: Spec, ctx: JobContext, encoder: keras.Model, decoder: keras.Model) -> None:
    _, size, _, channels = (int(d) if d else 0 for d in encoder.inputs[0].shape)
    with_set, without_set = _attribute_sets(spec, size, channels)
    z_with = predict(encoder, with_set, output=0)
    z_without = predict(encoder, without_set, output=0)
    vector = z_with.mean(axis=0) - z_without.mean(axis=0)
    base = z_without[: spec.count]
    strengths = np.array(spec.strengths, np.float32)
    points = (base[:, np.newaxis, :] + strengths[np.newaxis, :, np.newaxis] * vector).reshape(
        -1, vector.shape[0]
    )
    png = grid_png(predict(decoder, points.astype(np.float32)), columns=len(strengths))
    ctx.save_output("grid", "concept.png", png)
    summary = {
        "vector": [float(value) for value in vector],
        "norm": float(np.linalg.norm(vector)),
        "with_images": len(with_set),
        "without_images": len(without_set),
        "strengths": list(spec.strengths),
        "rows": len(base),
    }
    text = json.dumps(summary, indent=2) + "\n"
    ctx.save_output("concept", "vector.json", text.encode())


def _attribute_sets(spec: Spec, size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (float32 in [0, 1], the model's size and channels) with and without the
    attribute."""
    if spec.with_images is not None and spec.without_images is not None:
        sets = [
            load_images(folder, size, seed=spec.seed, limit=spec.dataset_size)
            for folder in (spec.with_images, spec.without_images)
        ]
    else:
        images, labels = load_labelled_images(
            spec.dataset, size, seed=spec.seed, limit=spec.dataset_size
        )
        sets = [
            images[np.isin(labels, classes)]
            for classes in (spec.with_labels or [], spec.without_classes)
        ]
    for which, images in zip(("with", "without"), sets, strict=True):
        if len(images) == 0:
            raise _bad(f"no images {which} the attribute among the {spec.dataset_size} looked at")
    return _as_channels(sets[0], channels), _as_channels(sets[1], channels)


def _as_channels(images: np.ndarray, channels: int) -> np.ndarray:
    pixels = images.astype(np.float32) / 255.0
    if pixels.shape[3] == channels:
        return pixels
    if channels == 1:
        return (pixels @ LUMINANCE)[..., np.newaxis]
    return np.repeat(pixels, channels, axis=3)


def _bad(message: str) -> JobError:
    return JobError("bad_input", message)
