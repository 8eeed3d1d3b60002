"""The training loop every training kind runs (image and text): `EpochLoop` drives a
kind's compiled train step over shuffled rows, epoch by epoch.

It owns what resuming exactly needs: the data order per (seed, epoch), a random key per
(seed, global step), progress and a NaN check after every step, per-epoch mean metrics,
checkpoints at the context's step boundaries, and the position to resume from. A kind
brings its rows (images, token pieces, character windows), its step, what it does at
the end of an epoch (a grid, a text sample) and what it measures besides the losses
(held-out and quality metrics: val_l1, fid), when the spec's `quality` and
`quality_every` say.

Importing this module is light (numpy): Keras and TensorFlow are loaded by the kinds'
train modules, so spec modules may import it at submit time.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from kinds.contract import Checkpoint, JobContext, JobError
from kinds.reproducibility import save_model
from kinds.seeds import SEED_MODULUS, Stream


class Schedule(Protocol):
    """The spec fields the loop reads (TrainingSpec has them)."""

    seed: int
    epochs: int
    batch_size: int
    steps_per_epoch: int | None
    quality: bool
    quality_every: int | None


class State(Protocol):
    """Every array a checkpoint must hold (keras_state.TrainingState)."""

    def arrays(self) -> dict[str, np.ndarray]: ...

    def load(self, arrays: Mapping[str, np.ndarray]) -> None: ...


@dataclasses.dataclass(frozen=True)
class TrainingRows:
    """What an epoch shuffles: `count` rows, given to the step by index.

    `identity` goes into every checkpoint, and a resume on rows of another identity is
    refused (the data changed under the job); `extra` goes in too, for the kind to read
    back (text-lm's vocabulary). `stride` spaces the indices (text-lm's LSTM windows
    start every `stride` characters of one stream)."""

    count: int
    source: str
    """Where the rows come from, in one word for errors: dataset, corpus."""
    describe: str
    """The rows in words, for errors: "dataset 'glyphs' has 64 images"."""
    too_small: str
    """Error code of a job with fewer rows than one batch."""
    identity: Mapping[str, Any]
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stride: int = 1


def steps_per_epoch(spec: Schedule, rows: TrainingRows) -> int:
    """Full batches per epoch (a last partial batch is dropped), capped by the spec."""
    steps = rows.count // spec.batch_size
    if steps == 0:
        raise JobError(rows.too_small, f"{rows.describe}, fewer than one batch ({spec.batch_size})")
    return min(steps, spec.steps_per_epoch or steps)


def epoch_order(seed: int, epoch: int, rows: TrainingRows) -> np.ndarray:
    """The shuffled row indices of one epoch, a function of (seed, epoch) only."""
    rng = np.random.default_rng([seed, Stream.DATA_ORDER, epoch])
    return rng.permutation(rows.count).astype(np.int32) * rows.stride


@dataclasses.dataclass
class Position:
    """Where training stands: `step` steps of `epoch` are done (epochs count from 1)."""

    epoch: int = 1
    step: int = 0
    global_step: int = 0
    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    """Per metric, the sum over the finished steps of this epoch."""


class EpochLoop:
    """Runs `train_step(indices, key) -> losses` over the epochs of `spec`.

    `indices` are the int32 row indices of one batch, `key` the int64 pair
    (seed, global step) for the step's stateless random ops; the step returns one
    float per name in `metrics`. After each epoch the means are recorded as one metrics
    event and `end_epoch(epoch, global_step)` runs. `state` gives and takes every array
    a checkpoint must hold; the loop adds its position.

    `evaluate()` measures what the losses do not (held-out and quality metrics), with
    the spec's `quality` on: with `quality_every` None at each epoch's end, into that
    epoch's event; with `quality_every` N at every global step that is a multiple of N,
    as an event of its own (that step and epoch). `evaluate_notes` go into those events
    (how the values were measured). It must be a pure function of the weights, so a
    resumed run records what an uninterrupted one did.

    Checkpoint metadata: epoch, step_in_epoch, global_step, `<metric>_sum` per metric,
    steps_per_epoch, and the rows' identity and extra entries.
    """

    def __init__(
        self,
        spec: Schedule,
        ctx: JobContext,
        *,
        rows: TrainingRows,
        metrics: Sequence[str],
        train_step: Callable[[np.ndarray, np.ndarray], Sequence[float]],
        state: State,
        end_epoch: Callable[[int, int], None],
        evaluate: Callable[[], Mapping[str, float]] | None = None,
        evaluate_notes: Mapping[str, str] | None = None,
        nan_hint: str = "try a lower learning_rate",
    ) -> None:
        self.spec, self.ctx, self.rows = spec, ctx, rows
        self.metrics = tuple(metrics)
        self.train_step, self.state, self.end_epoch = train_step, state, end_epoch
        self.evaluate = evaluate if spec.quality else None
        self.evaluate_notes = dict(evaluate_notes or {})
        self.nan_hint = nan_hint
        self.steps = steps_per_epoch(spec, rows)
        self.total = spec.epochs * self.steps
        self.seed = spec.seed % SEED_MODULUS

    def run(self, checkpoint: Checkpoint | None) -> int:
        """Train to the end, from `checkpoint` (the job's, if it has one); returns the
        final global step."""
        position = self._resume(checkpoint)
        while position.epoch <= self.spec.epochs:
            order = epoch_order(self.spec.seed, position.epoch, self.rows)
            while position.step < self.steps:
                self._step(position, order)
            position = Position(epoch=position.epoch + 1, global_step=position.global_step)
        return position.global_step

    def _step(self, position: Position, order: np.ndarray) -> None:
        batch = self.spec.batch_size
        indices = order[position.step * batch : (position.step + 1) * batch]
        key = np.array([self.seed, position.global_step], dtype=np.int64)
        values = dict(zip(self.metrics, self.train_step(indices, key), strict=True))
        if not all(math.isfinite(value) for value in values.values()):
            shown = ", ".join(f"{name}={value}" for name, value in values.items())
            raise JobError(
                "nan_loss",
                f"loss is not finite at epoch {position.epoch}, step {position.global_step + 1} "
                f"({shown}); {self.nan_hint}",
            )
        position.step += 1
        position.global_step += 1
        for name, value in values.items():
            position.sums[name] = position.sums.get(name, 0.0) + value
        epoch_end = position.step == self.steps
        for_epoch = self._evaluate_if_due(position, epoch_end)
        self.ctx.progress(position.global_step, self.total, epoch=position.epoch, metrics=values)
        if epoch_end:
            means = {name: position.sums.get(name, 0.0) / self.steps for name in self.metrics}
            self._record({**means, **for_epoch}, position)
            self.end_epoch(position.epoch, position.global_step)
        self.ctx.boundary(position.global_step, self._snapshotter(position))

    def _evaluate_if_due(self, position: Position, epoch_end: bool) -> Mapping[str, float]:
        """Evaluate when the schedule says; returns what goes into the epoch's event."""
        every = self.spec.quality_every
        due = position.global_step % every == 0 if every else epoch_end
        if self.evaluate is None or not due:
            return {}
        measured = {name: float(value) for name, value in self.evaluate().items()}
        if every:
            self._record(measured, position)
            return {}
        return measured

    def _record(self, values: Mapping[str, float], position: Position) -> None:
        measured = any(name not in self.metrics for name in values)
        notes = self.evaluate_notes if measured and self.evaluate_notes else None
        self.ctx.metrics(values, step=position.global_step, epoch=position.epoch, notes=notes)

    def _snapshotter(self, position: Position) -> functools.partial[Checkpoint]:
        # A finished epoch is saved as the start of the next one.
        if position.step == self.steps:
            position = Position(epoch=position.epoch + 1, global_step=position.global_step)
        frozen = dataclasses.replace(position, sums=dict(position.sums))
        return functools.partial(self._snapshot, frozen)

    def _snapshot(self, position: Position) -> Checkpoint:
        meta: dict[str, Any] = {
            "epoch": position.epoch,
            "step_in_epoch": position.step,
            "global_step": position.global_step,
            **{f"{name}_sum": position.sums.get(name, 0.0) for name in self.metrics},
            **self._identity(),
            **self.rows.extra,
        }
        return Checkpoint(step=position.global_step, arrays=self.state.arrays(), meta=meta)

    def _identity(self) -> dict[str, Any]:
        return {"steps_per_epoch": self.steps, **self.rows.identity}

    def _resume(self, checkpoint: Checkpoint | None) -> Position:
        if checkpoint is None:
            return Position()
        meta = checkpoint.meta
        expected = self._identity()
        saved = {name: meta.get(name) for name in expected}
        if saved != expected:
            raise JobError(
                "checkpoint_mismatch",
                f"checkpoint was taken on other training data ({_listed(saved)}); the job now "
                f"has {_listed(expected)}: did the {self.rows.source} change?",
            )
        try:
            self.state.load(dict(checkpoint.arrays))
        except ValueError as exc:  # keras_state.StateMismatch
            raise JobError("checkpoint_mismatch", f"cannot resume: {exc}") from None
        return Position(
            epoch=int(meta["epoch"]),
            step=int(meta["step_in_epoch"]),
            global_step=int(meta["global_step"]),
            sums={name: float(meta.get(f"{name}_sum", 0.0)) for name in self.metrics},
        )


def _listed(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())


def save_sample(
    ctx: JobContext, data: bytes, *, epoch: int, step: int, suffix: str = ".png"
) -> None:
    """An epoch's sample (a grid, a text) as the output sample/epoch_NNNN<suffix>."""
    ctx.save_output("sample", f"epoch_{epoch:04d}{suffix}", data, epoch=epoch, step=step)


def save_models(ctx: JobContext, models: Mapping[str, Any], *, epoch: int, step: int) -> None:
    """Record each model as a "model" output `<name>.keras`."""
    for name, model in models.items():
        ctx.save_output(
            "model",
            f"{name}.keras",
            functools.partial(save_model, model),
            epoch=epoch,
            step=step,
        )
