"""The style-transfer loop. Imports TensorFlow: loaded by `run` only.

Per worker process two cache entries serve every job of a shape: the VGG19 feature
extractor (keyed by weights and layers, shared by all sizes) and a `StyleTransferModel`
(keyed by weights, layers and image size) holding the generated image, the targets and
the compiled functions, each traced once. A job assigns its targets and hyperparameters
to the entry's variables, so a warm job neither rebuilds nor retraces.

Resume: a checkpoint holds the generated image and the iteration count (the whole SGD
state: plain SGD has no slots and the learning rate is a function of the iteration), or
for L-BFGS its point, gradient and correction pairs. Nothing is random once the backbone
exists (`none` weights are redrawn from the job seed), so with op determinism a resumed
run repeats the uninterrupted one bit for bit.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from kinds import backbones
from kinds.contract import Checkpoint, JobContext, JobError
from kinds.images import load_rgb, png_bytes, vgg_deprocess, vgg_preprocess
from kinds.reproducibility import set_op_determinism
from kinds.style_transfer import Spec
from kinds.style_transfer.lbfgs import Lbfgs, LbfgsState
from kinds.style_transfer.losses import (
    content_loss,
    gram_matrix,
    style_loss,
    style_normaliser,
    total_variation_loss,
)


class StyleTransferModel:
    """Cache entry for one (weights, layers, height, width): the fast-path computation.

    `jobs` counts the jobs that used this one; `tracing_counts` the traces of each compiled
    function.
    """

    def __init__(
        self,
        extractor: backbones.FeatureExtractor,
        height: int,
        width: int,
        content_layer: str,
        style_layers: Sequence[str],
    ) -> None:
        self.extractor = extractor
        self.height, self.width = height, width
        self.content_index = extractor.layers.index(content_layer)
        self.style_indices = [extractor.layers.index(name) for name in style_layers]
        self.normaliser = style_normaliser(height, width)
        shapes = extractor.model.compute_output_shape((1, height, width, 3))
        image_shape = (1, height, width, 3)

        def variable(shape: Sequence[int], name: str, dtype: tf.DType = tf.float32) -> tf.Variable:
            return tf.Variable(tf.zeros(shape, dtype), trainable=False, name=name)

        self.image = variable(image_shape, "generated")
        self.iterations = variable((), "iterations", tf.int64)
        self.content_target = variable(shapes[self.content_index][1:], "content_target")
        self.style_targets = [
            variable((shapes[i][-1], shapes[i][-1]), f"style_gram_{i}") for i in self.style_indices
        ]
        # content weight, style weight per layer, total variation weight
        self.loss_weights = variable((3,), "loss_weights")
        self.schedule = variable((3,), "schedule")  # initial rate, decay steps, decay rate
        image_spec = tf.TensorSpec(image_shape, tf.float32)
        self.set_targets = tf.function(self._set_targets, input_signature=[image_spec] * 2)
        self.loss_and_grads = tf.function(self._loss_and_grads, input_signature=[image_spec])
        self.sgd_step = tf.function(self._sgd_step, input_signature=[])
        self.jobs = 0

    @property
    def tracing_counts(self) -> dict[str, int]:
        functions = {
            "set_targets": self.set_targets,
            "loss_and_grads": self.loss_and_grads,
            "sgd_step": self.sgd_step,
        }
        return {name: f.experimental_get_tracing_count() for name, f in functions.items()}

    def start_job(self, spec: Spec, content: np.ndarray, style: np.ndarray) -> None:
        """Targets of this job's images, its weights and schedule; the image starts as the
        content image and the iteration count at zero."""
        per_layer = spec.style_weight / len(spec.style_layers)
        weights = [spec.content_weight, per_layer, spec.total_variation_weight]
        self.loss_weights.assign(np.array(weights, np.float32))
        schedule = [spec.learning_rate, spec.decay_steps, spec.decay_rate]
        self.schedule.assign(np.array(schedule, np.float32))
        self.set_targets(tf.constant(content), tf.constant(style))
        self.image.assign(content)
        self.iterations.assign(0)
        self.jobs += 1

    def loss(self, image: tf.Tensor) -> tf.Tensor:
        """The reference's loss of `image` against the stored targets."""
        content_weight, style_weight, total_variation_weight = tf.unstack(self.loss_weights)
        features = self.extractor(image)
        loss = tf.zeros(())
        loss += content_weight * content_loss(self.content_target, features[self.content_index][0])
        for target, index in zip(self.style_targets, self.style_indices, strict=True):
            loss += style_weight * style_loss(target, features[index][0], self.normaliser)
        loss += total_variation_weight * total_variation_loss(image, self.height, self.width)
        return loss

    def _set_targets(self, content: tf.Tensor, style: tf.Tensor) -> None:
        self.content_target.assign(self.extractor(content)[self.content_index][0])
        features = self.extractor(style)
        for target, index in zip(self.style_targets, self.style_indices, strict=True):
            target.assign(gram_matrix(features[index][0]))

    def _loss_and_grads(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(image)
            loss = self.loss(image)
        return loss, tape.gradient(loss, image)

    def _sgd_step(self) -> tf.Tensor:
        """One update of Keras' SGD under ExponentialDecay: the rate of iteration i is
        initial * rate ** (i / steps) in float32; returns the loss before the update."""
        loss, grads = self._loss_and_grads(self.image.read_value())
        initial, steps, rate = tf.unstack(self.schedule)
        learning_rate = initial * tf.pow(rate, tf.cast(self.iterations, tf.float32) / steps)
        self.image.assign_sub(grads * learning_rate)
        self.iterations.assign_add(1)
        return loss


def render(spec: Spec, ctx: JobContext) -> None:
    set_op_determinism(spec.deterministic)
    height, width = spec.size
    content = vgg_preprocess(load_rgb(spec.content, (height, width)))[np.newaxis]
    style = vgg_preprocess(load_rgb(spec.style, (height, width)))[np.newaxis]
    extractor = backbones.job_extractor(
        ctx.cache, backbones.VGG19, spec.backbone_weights, spec.layers, spec.seed
    )
    model = ctx.cache.get_or_build(
        model_key(spec, extractor),
        lambda: StyleTransferModel(extractor, height, width, spec.content_layer, spec.style_layers),
    )
    model.start_job(spec, content, style)
    runner = _LbfgsRun if spec.optimizer == "lbfgs" else _SgdRun
    runner(spec, ctx, model).run()


def model_key(spec: Spec, extractor: backbones.FeatureExtractor) -> tuple[object, ...]:
    """The compiled model wraps `extractor`, another cache entry (see worker.model_cache)."""
    return ("style-transfer", id(extractor), spec.content_layer, spec.style_layers, *spec.size)


class _Run(ABC):
    """The loop shared by both optimisers: progress, snapshots, checkpoints, final image."""

    def __init__(self, spec: Spec, ctx: JobContext, model: StyleTransferModel) -> None:
        self.spec, self.ctx, self.model = spec, ctx, model

    def run(self) -> None:
        start = self.resume()
        for iteration in range(start + 1, self.spec.iterations + 1):
            if not self.step(iteration):
                break
            if iteration % self.spec.snapshot_every == 0:
                self.save_image("snapshot", f"iteration_{iteration:05d}.png", iteration)
            self.ctx.boundary(iteration, self.snapshotter(iteration))
        if not np.all(np.isfinite(self.image())):  # SGD's loss is that before its last update
            raise JobError("nan_loss", "the final image is not finite; lower the learning_rate")
        self.save_image("image", "final.png", self.spec.iterations)

    def resume(self) -> int:
        checkpoint = self.ctx.restore()
        if checkpoint is None:
            self.begin()
            return 0
        meta = checkpoint.meta
        saved = (meta.get("optimizer"), meta.get("height"), meta.get("width"))
        expected = (self.spec.optimizer, self.model.height, self.model.width)
        if saved != expected:
            raise JobError(
                "checkpoint_mismatch",
                f"checkpoint was taken with optimizer, height, width = {saved}, "
                f"the job now has {expected}",
            )
        self.load(checkpoint)
        return checkpoint.step

    def checked(self, loss: float, iteration: int) -> float:
        if not math.isfinite(loss):
            raise JobError(
                "nan_loss",
                f"loss is not finite at iteration {iteration} ({loss}); "
                f"try a lower learning_rate or loss weights",
            )
        return loss

    def report(self, iteration: int, values: dict[str, float]) -> None:
        self.ctx.progress(iteration, self.spec.iterations, metrics=values)
        if iteration % self.spec.snapshot_every == 0 or iteration == self.spec.iterations:
            self.ctx.metrics(values, step=iteration)

    def save_image(self, role: str, name: str, iteration: int) -> None:
        png = png_bytes(vgg_deprocess(self.image()))
        self.ctx.save_output(role, name, png, step=iteration)

    def snapshotter(self, iteration: int) -> Callable[[], Checkpoint]:
        meta = {
            "optimizer": self.spec.optimizer,
            "height": self.model.height,
            "width": self.model.width,
        }
        return lambda: Checkpoint(step=iteration, arrays=self.arrays(), meta=meta | self.meta())

    # Per optimiser.
    @abstractmethod
    def begin(self) -> None:
        """A fresh start (the model's start_job has put the content image in place)."""

    @abstractmethod
    def load(self, checkpoint: Checkpoint) -> None:
        """Continue from `checkpoint` (written by `arrays` and `meta`)."""

    @abstractmethod
    def step(self, iteration: int) -> bool:
        """One iteration; False when nothing more can be gained (the result is final)."""

    @abstractmethod
    def image(self) -> np.ndarray:
        """The current image, VGG19-preprocessed, (1, height, width, 3)."""

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """The image and optimiser state a checkpoint holds."""

    @abstractmethod
    def meta(self) -> dict[str, object]:
        """The optimiser's scalars a checkpoint holds."""


class _SgdRun(_Run):
    """The reference's optimiser; the loss reported for iteration i is that of the image
    before its i-th update, as the reference prints it."""

    def begin(self) -> None:
        pass  # start_job put the content image in place

    def load(self, checkpoint: Checkpoint) -> None:
        image = np.asarray(checkpoint.arrays["image"])
        if image.shape != tuple(self.model.image.shape):
            raise JobError("checkpoint_mismatch", f"checkpoint image is {image.shape}")
        self.model.image.assign(image)
        self.model.iterations.assign(checkpoint.step)

    def step(self, iteration: int) -> bool:
        loss = self.checked(float(self.model.sgd_step()), iteration)
        self.report(iteration, {"loss": loss})
        return True

    def image(self) -> np.ndarray:
        return self.model.image.numpy()

    def arrays(self) -> dict[str, np.ndarray]:
        return {"image": self.image()}

    def meta(self) -> dict[str, object]:
        return {}


class _LbfgsRun(_Run):
    """L-BFGS; the loss reported for iteration i is that of the image after it, and
    `evaluations` counts loss-and-gradient evaluations (line-search trials included)."""

    def __init__(self, spec: Spec, ctx: JobContext, model: StyleTransferModel) -> None:
        super().__init__(spec, ctx, model)
        self.shape = tuple(model.image.shape)
        self.optimizer = Lbfgs(self.objective, spec.lbfgs_memory, spec.learning_rate)
        self.state: LbfgsState | None = None

    def objective(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grads = self.model.loss_and_grads(tf.constant(x.reshape(self.shape)))
        return float(loss), grads.numpy().reshape(-1)

    def begin(self) -> None:
        self.state = self.optimizer.start(self.model.image.numpy())
        self.checked(self.state.loss, 0)

    def load(self, checkpoint: Checkpoint) -> None:
        self.state = LbfgsState.from_checkpoint(checkpoint.arrays, checkpoint.meta)
        if self.state.x.size != math.prod(self.shape):
            raise JobError("checkpoint_mismatch", "checkpoint image has another size")

    def step(self, iteration: int) -> bool:
        assert self.state is not None
        self.optimizer.iterate(self.state)
        if self.state.stalled:  # no step lowers the loss: the result is final
            values = {"loss": self.state.loss, "evaluations": float(self.state.evaluations)}
            self.ctx.progress(self.spec.iterations, self.spec.iterations, metrics=values)
            self.ctx.metrics({**values, "stalled_at": float(iteration)}, step=iteration)
            return False
        loss = self.checked(self.state.loss, iteration)
        self.report(iteration, {"loss": loss, "evaluations": float(self.state.evaluations)})
        return True

    def image(self) -> np.ndarray:
        assert self.state is not None
        return self.state.x.reshape(self.shape)

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.state is not None
        return self.state.arrays()

    def meta(self) -> dict[str, object]:
        assert self.state is not None
        return self.state.meta()
