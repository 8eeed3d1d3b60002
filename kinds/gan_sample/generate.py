"""Rendering of the gan-sample kind. Imports Keras: loaded by `run` only."""

from __future__ import annotations

import math

import numpy as np

from kinds.contract import JobContext, JobError
from kinds.gan_sample import Spec
from kinds.images import grid_png, png_bytes, to_uint8
from kinds.sampling import (
    PREDICT_BATCH,
    generation_step,
    gif_bytes,
    load_model,
    model_path,
    predict,
    walk,
)
from kinds.seeds import SamplingStream


class Generator:
    """A trained dcgan generator (latent -> image) or cgan generator ([latent, one-hot
    label] -> image), told apart by its inputs."""

    def __init__(self, model: object, job_id: str) -> None:
        self.model = model
        inputs = model.inputs  # type: ignore[attr-defined]
        self.latent_dim = int(inputs[0].shape[-1])
        self.classes = int(inputs[1].shape[-1]) if len(inputs) == 2 else None
        self.job_id = job_id

    def check_labels(self, labels: list[int] | None) -> None:
        if labels is None:
            return
        if self.classes is None:
            raise JobError(
                "bad_input",
                f"labels apply to a cgan generator; job {self.job_id} made an unconditional "
                "(dcgan) generator",
            )
        wrong = sorted({label for label in labels if label >= self.classes})
        if wrong:
            raise JobError(
                "bad_input",
                f"labels {wrong} are outside the {self.classes} classes of job {self.job_id}",
            )

    def __call__(self, latents: np.ndarray, conditions: np.ndarray | None) -> np.ndarray:
        if self.classes is None:
            return predict(self.model, latents)
        assert conditions is not None
        return predict(self.model, [latents, conditions])


def generate(spec: Spec, ctx: JobContext) -> None:
    generator = Generator(load_model(model_path(ctx, spec.model, "generator.keras")), spec.model)
    generator.check_labels(spec.labels)
    label_cycle = spec.labels or (list(range(generator.classes)) if generator.classes else [])
    frames = spec.interpolate or 0
    total = math.ceil(spec.count / PREDICT_BATCH) + (1 if frames else 0)

    rng = np.random.default_rng([spec.seed, SamplingStream.IMAGES])
    latents = rng.standard_normal((spec.count, generator.latent_dim), np.float32)
    conditions = None
    if generator.classes:
        classes = np.resize(np.array(label_cycle), spec.count)
        conditions = np.eye(generator.classes, dtype=np.float32)[classes]
    images = []
    for index, begin in enumerate(range(0, spec.count, PREDICT_BATCH)):
        chunk = slice(begin, begin + PREDICT_BATCH)
        images.append(generator(latents[chunk], None if conditions is None else conditions[chunk]))
        generation_step(ctx, index + 1, total)
    images_array = np.concatenate(images)
    for index, image in enumerate(to_uint8(images_array)):
        data = png_bytes(image)
        ctx.save_output("image", f"sample_{index:04d}.png", data)
    columns = spec.columns or (len(label_cycle) if label_cycle else None)
    grid = grid_png(images_array, columns=min(columns, spec.count) if columns else None)
    ctx.save_output("grid", "grid.png", grid)

    if frames:
        rng = np.random.default_rng([spec.seed, SamplingStream.WALK])
        ends = rng.standard_normal((2, generator.latent_dim))
        path = walk(ends[0], ends[1], frames, spherical=spec.interpolation == "spherical")
        walk_conditions = None
        if generator.classes:
            first, last = (label_cycle[0], label_cycle[-1]) if spec.labels else (0, 0)
            onehot = np.eye(generator.classes, dtype=np.float32)
            walk_conditions = walk(onehot[first], onehot[last], frames, spherical=False)
        video = generator(path, walk_conditions)
        for index, frame in enumerate(to_uint8(video)):
            data = png_bytes(frame)
            ctx.save_output("walk", f"frame_{index:04d}.png", data)
        gif = gif_bytes(video, spec.frame_ms)
        ctx.save_output("walk", "walk.gif", gif)
        generation_step(ctx, total, total)
