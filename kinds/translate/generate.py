"""Translation of the translate kind. Imports TensorFlow: loaded by `run` only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import kinds.cyclegan.model  # noqa: F401 - registers the layers a saved generator holds
from kinds.contract import JobContext, JobError
from kinds.datasets import check_image_file, read_image
from kinds.images import grid_png, png_bytes, to_uint8
from kinds.sampling import generation_step, load_model, model_path
from kinds.translate import (
    CYCLEGAN_GENERATORS,
    PIX2PIX_GENERATOR,
    Spec,
    direction_refused,
)
from kinds.translation_nets import to_model_range, to_unit_range, translate_each


def generate(spec: Spec, ctx: JobContext) -> None:
    path, batch_statistics = generator_path(spec, ctx)
    model = load_model(path)
    size = int(model.inputs[0].shape[1])
    pairs = []
    for index, image_path in enumerate(spec.images):
        source = to_model_range(_read(Path(image_path), size)[np.newaxis]).numpy()
        translated = translate_each(model, source, training=batch_statistics, seed=spec.seed)
        pair = to_unit_range(np.concatenate([source, translated]))
        ctx.save_output("image", f"translated_{index:04d}.png", png_bytes(to_uint8(pair[1])))
        pairs.append(pair)
        generation_step(ctx, index + 1, len(spec.images))
    ctx.save_output("grid", "grid.png", grid_png(np.concatenate(pairs), columns=2))


def generator_path(spec: Spec, ctx: JobContext) -> tuple[Path, bool]:
    """The generator file to apply, and whether it runs on batch statistics (pix2pix)."""
    models = ctx.outputs_of(spec.model, "model")
    if PIX2PIX_GENERATOR in models:
        if spec.direction is not None:
            raise JobError("bad_input", direction_refused(spec.model))
        return models[PIX2PIX_GENERATOR], True
    name = CYCLEGAN_GENERATORS[spec.direction or "AtoB"]
    return model_path(ctx, spec.model, name), False


def _read(path: Path, size: int) -> np.ndarray:
    try:
        check_image_file(path)
        return read_image(path, size)
    except ValueError as exc:
        raise JobError("bad_input", str(exc)) from None
