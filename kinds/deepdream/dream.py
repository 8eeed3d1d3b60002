"""The DeepDream loop. Imports TensorFlow: loaded by `run` only.

Per worker process two cache entries serve every job with the same weights and layer
names: the InceptionV3 feature extractor and a `DreamModel` holding the compiled ascent
step. The step is traced once for images of any size (its input signature leaves height
and width open), so neither a new octave nor a new image size retraces it, and the layer
weights are a variable that each job assigns.

State between steps is the image, the octave and the step in it (normalised gradient
ascent keeps no optimiser state); the shrunk originals used for the detail re-injection
are recomputed from the original image. Checkpoint meta `step` = 0 means the octave has
not started: the image is the previous octave's result (or the original), still to be
resized.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from kinds import backbones
from kinds.contract import Checkpoint, JobContext, JobError
from kinds.deepdream import BORDER, Spec
from kinds.images import inception_deprocess, inception_preprocess, load_rgb, png_bytes
from kinds.reproducibility import set_op_determinism


class DreamModel:
    """Cache entry for one (weights, layers): the loss and the compiled ascent step.

    `jobs` counts the jobs that used this one, `tracing_count` the traces of the step.
    """

    def __init__(self, extractor: backbones.FeatureExtractor) -> None:
        self.extractor = extractor
        self.layers = extractor.layers
        self.coefficients = tf.Variable(
            tf.zeros((len(self.layers),)), trainable=False, name="layer_weights"
        )
        signature = [
            tf.TensorSpec((1, None, None, 3), tf.float32),  # image of any size
            tf.TensorSpec((), tf.float32),  # step size
        ]
        self.step = tf.function(self._step, input_signature=signature)
        self.jobs = 0

    @property
    def tracing_count(self) -> int:
        return self.step.experimental_get_tracing_count()

    def start_job(self, spec: Spec) -> None:
        weights = [spec.layers[name] for name in self.layers]
        self.coefficients.assign(np.array(weights, np.float32))
        self.jobs += 1

    def loss(self, image: tf.Tensor) -> tf.Tensor:
        """Sum over layers of weight x mean squared activation inside the border."""
        features = self.extractor(image)
        if not isinstance(features, list | tuple):
            features = [features]
        loss = tf.zeros(())
        for index, activation in enumerate(features):
            inside = activation[:, BORDER:-BORDER, BORDER:-BORDER, :]
            loss += self.coefficients[index] * tf.reduce_mean(tf.square(inside))
        return loss

    def _step(self, image: tf.Tensor, step_size: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One ascent step; returns the loss before it and the new image."""
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = self.loss(image)
        grads = tf.math.l2_normalize(tape.gradient(loss, image))
        return loss, image + step_size * grads


@dataclasses.dataclass
class Position:
    octave: int = 0  # counting from 0, the smallest
    step: int = 0  # steps done in this octave; 0: not started


def dream(spec: Spec, ctx: JobContext) -> None:
    set_op_determinism(spec.deterministic)
    original = tf.constant(inception_preprocess(load_rgb(spec.image))[np.newaxis])
    layers = tuple(sorted(spec.layers))
    extractor = backbones.job_extractor(
        ctx.cache, backbones.INCEPTION_V3, spec.backbone_weights, layers, spec.seed
    )
    model = ctx.cache.get_or_build(
        ("deepdream", id(extractor), layers),  # wraps another entry: see worker.model_cache
        lambda: DreamModel(extractor),
    )
    model.start_job(spec)
    _Dream(spec, ctx, model, original).run()


class _Dream:
    def __init__(self, spec: Spec, ctx: JobContext, model: DreamModel, original: tf.Tensor):
        self.spec, self.ctx, self.model = spec, ctx, model
        self.original = original
        self.shapes = spec.octave_shapes
        self.total = spec.octaves * spec.steps
        self.step_size = tf.constant(spec.step_size, tf.float32)

    def run(self) -> None:
        position, image = self.resume()
        while position.octave < self.spec.octaves:
            if position.step == 0:
                image = tf.image.resize(image, self.shapes[position.octave])
            loss, image = self.model.step(image, self.step_size)
            loss = float(loss)
            if not math.isfinite(loss):
                raise JobError(
                    "nan_loss",
                    f"loss is not finite at octave {position.octave + 1}, step "
                    f"{position.step + 1} ({loss}); check the layer weights and step_size",
                )
            position.step += 1
            metrics = {"loss": loss, "octave": float(position.octave + 1)}
            max_loss = self.spec.max_loss
            if position.step == self.spec.steps or (max_loss is not None and loss > max_loss):
                image = self.finish_octave(image, position, metrics)
                position = Position(position.octave + 1, 0)
            step = self.global_step(position)
            self.ctx.progress(step, self.total, metrics=metrics)
            self.ctx.boundary(step, self.snapshotter(position, image))
        if not np.all(np.isfinite(image.numpy())):  # the loss is that before the last step
            raise JobError("nan_loss", "the final image is not finite; lower step_size")
        self.save_image("image", "final.png", image, self.total)

    def finish_octave(
        self, image: tf.Tensor, position: Position, metrics: dict[str, float]
    ) -> tf.Tensor:
        """Re-inject the detail lost by shrinking the original, save the octave's image."""
        image = image + self.lost_detail(position.octave)
        octave = position.octave + 1
        step = self.global_step(Position(octave, 0))
        self.save_image("snapshot", f"octave_{octave}.png", image, step)
        self.ctx.metrics({**metrics, "steps": float(position.step)}, step=step)
        return image

    def lost_detail(self, octave: int) -> tf.Tensor:
        """The original at this octave's size minus the previous octave's shrunk original
        scaled up to it (the first octave: minus the smallest original scaled to itself)."""
        shape = self.shapes[octave]
        shrunk = tf.image.resize(self.original, self.shapes[max(octave - 1, 0)])
        return tf.image.resize(self.original, shape) - tf.image.resize(shrunk, shape)

    def global_step(self, position: Position) -> int:
        return position.octave * self.spec.steps + position.step

    def save_image(self, role: str, name: str, image: tf.Tensor, step: int) -> None:
        png = png_bytes(inception_deprocess(image.numpy()))
        self.ctx.save_output(role, name, png, step=step)

    def snapshotter(self, position: Position, image: tf.Tensor) -> Callable[[], Checkpoint]:
        def snapshot() -> Checkpoint:
            meta = {"octave": position.octave, "step_in_octave": position.step}
            meta |= {"octaves": self.spec.octaves, "steps": self.spec.steps}
            arrays = {"image": image.numpy()}
            return Checkpoint(step=self.global_step(position), arrays=arrays, meta=meta)

        return snapshot

    def resume(self) -> tuple[Position, tf.Tensor]:
        checkpoint = self.ctx.restore()
        if checkpoint is None:
            return Position(), self.original
        meta = checkpoint.meta
        saved = (meta.get("octaves"), meta.get("steps"))
        if saved != (self.spec.octaves, self.spec.steps):
            raise JobError(
                "checkpoint_mismatch",
                f"checkpoint was taken with octaves, steps = {saved}, the job now has "
                f"{(self.spec.octaves, self.spec.steps)}",
            )
        position = Position(int(meta["octave"]), int(meta["step_in_octave"]))
        image = np.asarray(checkpoint.arrays["image"])
        if position.step:
            expected = self.shapes[position.octave]
        elif position.octave:
            expected = self.shapes[position.octave - 1]
        else:
            expected = tuple(self.original.shape[1:3])
        if image.shape != (1, *expected, 3):
            raise JobError(
                "checkpoint_mismatch",
                f"checkpoint image is {image.shape[1:3]}, octave {position.octave + 1} "
                f"expects {expected}",
            )
        return position, tf.constant(image)
