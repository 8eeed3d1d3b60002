"""Latent-space helpers shared by the generative kinds: grids, walks, animated GIFs, and
reading another job's Keras model.

Importing this module is light (numpy and Pillow); Keras is imported by `load_model`
and `predict` only.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import detail
from kinds.contract import Checkpoint, JobContext, JobError
from kinds.images import to_uint8

PREDICT_BATCH = 256  # images per forward pass when decoding many latent points
MIN_FRAME_MS = 20  # GIF delays are in hundredths of a second; most viewers floor at 20 ms


def latent_grid(
    size: int,
    low: float,
    high: float,
    latent_dim: int,
    dims: tuple[int, int] = (0, 1),
) -> np.ndarray:
    """size*size latent points (float32, row-major) on a regular grid over [low, high]
    in the latent dimensions `dims` (x along a row, y from high at the top to low at the
    bottom, as in a plot); every other dimension is 0."""
    axis = np.linspace(low, high, size, dtype=np.float64)
    points = np.zeros((size, size, latent_dim), dtype=np.float32)
    points[:, :, dims[0]] = axis[np.newaxis, :]
    points[:, :, dims[1]] = axis[::-1, np.newaxis]
    return points.reshape(size * size, latent_dim)


def walk(start: np.ndarray, end: np.ndarray, frames: int, spherical: bool) -> np.ndarray:
    """`frames` points from `start` to `end` (both included), float32.

    Spherical interpolation keeps the norm of Gaussian latent vectors typical all the way
    (a straight line passes near the origin, where GAN generators were never trained);
    it falls back to a straight line for (anti)parallel or zero vectors.
    """
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    steps = np.linspace(0.0, 1.0, frames)[:, np.newaxis]
    norms = np.linalg.norm(start) * np.linalg.norm(end)
    if spherical and norms > 0:
        cosine = np.clip(np.dot(start, end) / norms, -1.0, 1.0)
        omega = np.arccos(cosine)
        if np.sin(omega) > 1e-6:
            weights_start = np.sin((1.0 - steps) * omega) / np.sin(omega)
            weights_end = np.sin(steps * omega) / np.sin(omega)
            return (weights_start * start + weights_end * end).astype(np.float32)
    return ((1.0 - steps) * start + steps * end).astype(np.float32)


def gif_bytes(frames: np.ndarray, frame_ms: int) -> bytes:
    """Images (n, h, w, 1 or 3) in [0, 1] as a looping animated GIF.

    GIF encoders keep a run of identical consecutive frames as one frame shown for
    their summed time, so a GIF may hold fewer frames than given (never less time).
    """
    pixels = to_uint8(frames)
    if pixels.shape[3] == 1:
        images = [Image.fromarray(frame[:, :, 0], mode="L") for frame in pixels]
    else:
        images = [Image.fromarray(frame, mode="RGB") for frame in pixels]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=max(frame_ms, MIN_FRAME_MS),
        loop=0,
    )
    return buffer.getvalue()


def model_path(ctx: JobContext, job_id: str, name: str) -> Path:
    """The model output `name` of job `job_id`, or a clear JobError."""
    models = ctx.outputs_of(job_id, "model")
    if name not in models:
        found = ", ".join(sorted(models)) or "none"
        raise JobError(
            "model_missing",
            f"job {job_id} has no model output {name!r} (its model outputs: {found})",
        )
    return models[name]


def load_model(path: Path) -> Any:
    """A saved .keras model, or JobError("model_unreadable") naming the file."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for a damaged archive
        text = detail(exc)
        raise JobError("model_unreadable", f"cannot load {path}: {text}") from None


def predict(
    model: Any, inputs: np.ndarray | Sequence[np.ndarray], *, output: int = 0
) -> np.ndarray:
    """model(inputs) in inference mode, PREDICT_BATCH rows at a time, as numpy; of a
    model with several outputs (the VAE encoder's z_mean, z_log_var), output `output`."""
    parts = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    count = len(parts[0])
    outputs = []
    for begin in range(0, count, PREDICT_BATCH):
        chunk = [part[begin : begin + PREDICT_BATCH] for part in parts]
        result = model(chunk[0] if len(chunk) == 1 else chunk, training=False)
        if isinstance(result, (list, tuple)):
            result = result[output]
        outputs.append(np.asarray(result))
    return np.concatenate(outputs, axis=0)


def generation_step(ctx: JobContext, step: int, total: int) -> None:
    """Progress of a generation job, and the chance to pause or cancel it. There is
    nothing to resume from but the spec: a resumed job makes everything again, to the
    same bytes."""
    ctx.progress(step, total)
    ctx.boundary(step, lambda: Checkpoint(step=step, arrays={}, meta={}))
