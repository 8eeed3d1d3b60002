"""DCGAN training speed through Atelier against the same model trained by a plain
`model.fit`, with checkpoints at the default interval (`checkpoint_every` 200).

    python bench/bench_dcgan.py [--steps 100] [--epochs 2] [--repeats 2]
                                [--checkpoint-every 200] [--e2e] [--quick] [--json FILE]

The defaults (glyphs 28x28, batch 32, latent 128: the reference's settings) make each
run 200 steps, the shortest run that holds one checkpoint at the default interval. A
step costs 0.6 to 1.6 CPU seconds (0.3 to 0.8 s of wall time on two cores), so the
default run takes 5 to 12 minutes; --e2e adds one more run per repeat. On a shared
machine the wall figures swing with other processes' load (printed with every run).

Arms, in one process, interleaved (order reversed every repeat), after a short untimed
warm-up run of each (process-wide TensorFlow start-up costs):

- atelier: a dcgan job run by the worker's own `worker.runtime.execute` in this process
  (bench/harness.py LocalRuntime: claim, lease heartbeat, the real RunContext with
  throttled progress writes, metrics events, a sample grid per epoch, atomic fsynced
  checkpoints recorded as outputs, `generator.keras` at the end), with clocks added by
  harness.TimedContext. The process model cache is emptied before each run, so every
  run builds and traces, as the baseline does.
- fit: the Keras DCGAN example's `keras.Model` with its `train_step` (discriminator
  update then generator update, the same losses, label noise and Adam settings, the
  networks of `kinds.dcgan.model`) trained by `model.fit` on a shuffled, batched,
  prefetched `tf.data.Dataset` of the same glyph images (one epoch is one pass of them,
  as for the job), verbose=0.
- e2e (--e2e): the same job submitted to a real `atelier up --workers 1` stack, timed
  from its own events; the stack's warm-up job builds the models, so it runs warm.

What is timed, the same way for both in-process arms (harness.Window):

- steady steps/s, the headline: steps 2..N. Step 1 holds the trace of the train step in
  both, so leaving it out compares training, not tracing. What a job does between steps
  (progress writes, epoch metrics, sample grids, checkpoints) is inside the window: that
  is the cost being measured. The window ends when `fit` returns, and at the end of the
  job's last `boundary`; the final `generator.keras` save comes after it (reported in
  the breakdown). For e2e: from the first `progress` event to the last `metrics` event.
- loop steps/s including step 1: from the start of training (`fit`'s on_train_begin;
  the job's `restore` call, after data loading and the model build).
- steps per CPU second over the steady window (all threads of this process): moved less
  than wall time by other processes' load.
- checkpoint share: time inside checkpoint saves (snapshot, .npz write, fsyncs and
  renames, hashing and recording the output) over the job's wall time (claim to recorded
  success), and per checkpoint interval, which is what a long job pays.
"""

from __future__ import annotations

import argparse
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import harness
import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kinds.datasets import load_images
from kinds.dcgan.model import build_discriminator, build_generator
from tests.fixtures.stacks import Stack

IMAGE_SIZE, CHANNELS, BATCH_SIZE, LATENT_DIM = 28, 1, 32, 128
LEARNING_RATE, LABEL_NOISE, WARMUP_STEPS = 1e-4, 0.05, 10
GENERATED_LABEL, REAL_LABEL = 1.0, 0.0  # the Keras example's labels, as in kinds/dcgan


@dataclass(frozen=True)
class Trained:
    window: harness.Window
    wall: float  # the job from claim to success, or the whole fit call
    run: harness.Run | None = None  # the atelier arm's job

    def __str__(self) -> str:
        window = self.window
        cpu = "" if math.isnan(window.last.cpu) else f", {window.cpu_rate:.3f} steps per CPU s"
        return f"{window.steady_rate:.3f} steps/s (steps 2..{window.steps}){cpu}"


class PlainDcgan(keras.Model):
    """The Keras DCGAN example's model, with Atelier's networks and hyperparameters."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.generator = build_generator(IMAGE_SIZE, CHANNELS, LATENT_DIM)
        self.discriminator = build_discriminator(IMAGE_SIZE, CHANNELS)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_metric = keras.metrics.Mean(name="d_loss")
        self.g_loss_metric = keras.metrics.Mean(name="g_loss")

    def compile(self, learning_rate: float) -> None:
        super().compile()
        self.d_optimizer = keras.optimizers.Adam(learning_rate)
        self.g_optimizer = keras.optimizers.Adam(learning_rate)
        self.loss_fn = keras.losses.BinaryCrossentropy()

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.d_loss_metric, self.g_loss_metric]

    def train_step(self, real: tf.Tensor) -> dict[str, tf.Tensor]:
        count = ops.shape(real)[0]
        latents = keras.random.normal((count, LATENT_DIM), seed=self.seed_generator)
        images = ops.concatenate([self.generator(latents, training=True), real], axis=0)
        labels = ops.concatenate(
            [ops.full((count, 1), GENERATED_LABEL), ops.full((count, 1), REAL_LABEL)], axis=0
        )
        labels += LABEL_NOISE * keras.random.uniform(ops.shape(labels), seed=self.seed_generator)
        d_weights = self.discriminator.trainable_weights
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(images, training=True))
        self.d_optimizer.apply(tape.gradient(d_loss, d_weights), d_weights)

        latents = keras.random.normal((count, LATENT_DIM), seed=self.seed_generator)
        misleading = ops.full((count, 1), REAL_LABEL)
        g_weights = self.generator.trainable_weights
        with tf.GradientTape() as tape:
            generated = self.generator(latents, training=True)
            g_loss = self.loss_fn(misleading, self.discriminator(generated, training=True))
        self.g_optimizer.apply(tape.gradient(g_loss, g_weights), g_weights)
        self.d_loss_metric.update_state(d_loss)
        self.g_loss_metric.update_state(g_loss)
        return {"d_loss": self.d_loss_metric.result(), "g_loss": self.g_loss_metric.result()}


def fit_run(images: np.ndarray, epochs: int) -> Trained:
    """`len(images)` is steps_per_epoch * batch_size: each epoch is one pass of the data."""
    began = harness.Stamp.now().wall
    keras.utils.set_random_seed(0)
    model = PlainDcgan(seed=0)
    model.compile(LEARNING_RATE)
    data = (
        tf.data.Dataset.from_tensor_slices(images)
        .shuffle(len(images), seed=0, reshuffle_each_iteration=True)
        .batch(BATCH_SIZE, drop_remainder=True)
        .map(lambda batch: tf.cast(batch, tf.float32) / 255.0, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    clock = harness.FitClock()
    model.fit(data, epochs=epochs, shuffle=False, verbose=0, callbacks=[clock.callback()])
    window = clock.window(epochs * (len(images) // BATCH_SIZE))
    return Trained(window, window.last.wall - began)


def atelier_run(runtime: harness.LocalRuntime, spec: dict[str, Any]) -> Trained:
    run = runtime.run("dcgan", spec, cold=True)  # build and trace, like the baseline
    return Trained(run.ctx.window(), run.wall, run)


def e2e_run(stack: Stack, spec: dict[str, Any]) -> Trained:
    job_id = harness.run_on_stack(stack, "dcgan", spec)
    events = stack.client.events(job_id)
    started = harness.event_times(events, "started")[-1]

    def at(type_: str, index: int) -> harness.Stamp:
        seconds = (harness.event_times(events, type_)[index] - started).total_seconds()
        return harness.Stamp(seconds, math.nan)

    steps = stack.client.get(job_id).total_steps or 0
    window = harness.Window(steps, math.nan, at("progress", 0), at("metrics", -1))
    return Trained(window, at("succeeded", -1).wall)


def job_spec(steps: int, epochs: int, checkpoint_every: int) -> dict[str, Any]:
    return dict(
        dataset="glyphs", image_size=IMAGE_SIZE, batch_size=BATCH_SIZE, latent_dim=LATENT_DIM,
        epochs=epochs, steps_per_epoch=steps, dataset_size=steps * BATCH_SIZE,  # one pass
        checkpoint_every=checkpoint_every, learning_rate=LEARNING_RATE, label_noise=LABEL_NOISE,
        quality=False,  # the Keras baseline measures no FID
    )  # fmt: skip


def measure(
    args: argparse.Namespace, runtime: harness.LocalRuntime, stack: Stack | None
) -> dict[str, list[Trained]]:
    spec = job_spec(args.steps, args.epochs, args.checkpoint_every)
    images = load_images("glyphs", IMAGE_SIZE, seed=0, limit=spec["dataset_size"])
    warm_steps = min(WARMUP_STEPS, args.steps)
    warmup_spec = job_spec(warm_steps, 1, args.checkpoint_every)
    arms = {
        "atelier": lambda: atelier_run(runtime, spec),
        "fit": lambda: fit_run(images, args.epochs),
    }
    warmups = {
        "atelier": lambda: atelier_run(runtime, warmup_spec),
        "fit": lambda: fit_run(images[: warm_steps * BATCH_SIZE], 1),
    }
    if stack is not None:
        arms["e2e"] = lambda: e2e_run(stack, spec)
        warmups["e2e"] = lambda: harness.run_on_stack(stack, "dcgan", warmup_spec)
    return harness.interleave(arms, args.repeats, warmup=warmups)


RATES = (  # figure, rate, what it is, target
    ("train_steps_per_s_ratio", "steady_rate", "steady steps/s, steps 2..N", ">= 0.95"),
    ("loop_steps_per_s_ratio", "loop_rate", "steps/s including step 1 (its trace), cold", None),
    ("steps_per_cpu_s_ratio", "cpu_rate", "steps per CPU second, steps 2..N", None),
)


def report_rates(report: harness.Report, results: dict[str, list[Trained]]) -> None:
    for figure, rate, what, target in RATES:
        fit = [getattr(trained.window, rate) for trained in results["fit"]]
        for arm in ("atelier", "e2e") if rate == "steady_rate" else ("atelier",):
            if arm in results:  # e2e: no loop start and no CPU clock (another process)
                mine = [getattr(trained.window, rate) for trained in results[arm]]
                name = figure if arm == "atelier" else f"{arm}_{figure}"
                report.ratio(
                    name, mine, fit, arm=arm, baseline="model.fit", target=target, what=what
                )


def report_breakdown(report: harness.Report, runs: list[harness.Run]) -> None:
    """Where an atelier job's time goes (medians over the runs)."""
    parts = {
        "job_wall_s": lambda r, c: r.wall,
        "before_training_s": lambda r, c: c.restored - r.began,  # kind import, data, build
        "step_1_s": lambda r, c: c.steps[0].wall - c.restored,  # holds the trace
        "steps_2_to_n_s": lambda r, c: c.steps[-1].wall - c.steps[0].wall,
        "in_progress_s": lambda r, c: c.seconds["progress"],  # throttled database writes
        "at_epoch_ends_s": lambda r, c: c.seconds["epoch_end"],  # metrics event, sample grid
        "in_metrics_s": lambda r, c: c.seconds["metrics"],
        "in_checkpoints_s": lambda r, c: sum(c.checkpoint_saves),
        "after_training_s": lambda r, c: r.began + r.wall - c.steps[-1].wall,  # generator.keras
    }
    for figure, seconds in parts.items():
        report.figure(figure, harness.median([seconds(r, r.ctx) for r in runs]), "s")


def main() -> None:
    parser = harness.parser(__doc__, repeats=2)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument(
        "--e2e", action="store_true", help="also run the job on `atelier up --workers 1`"
    )
    quick = {"steps": 3, "epochs": 2, "repeats": 1, "checkpoint_every": 3}
    args = harness.parse(parser, quick)
    report = harness.Report("dcgan", args)
    print(
        f"DCGAN, glyphs {IMAGE_SIZE}x{IMAGE_SIZE}, batch {BATCH_SIZE}, latent {LATENT_DIM}: "
        f"{args.epochs} epochs x {args.steps} steps, checkpoint_every {args.checkpoint_every}; "
        f"{args.repeats} repeats; load average {harness.load_average()}"
    )
    with (
        harness.LocalRuntime("atelier-bench-dcgan-") as runtime,
        harness.stack(workers=1) if args.e2e else nullcontext() as stack,
    ):
        results = measure(args, runtime, stack)
    report_rates(report, results)
    runs = [trained.run for trained in results["atelier"] if trained.run is not None]
    harness.report_checkpoints(report, runs, args.checkpoint_every)
    report_breakdown(report, runs)
    if "e2e" in results:
        walls = [trained.wall for trained in results["e2e"]]
        report.figure("e2e_job_wall_s", harness.median(walls), "s", runs=walls)


if __name__ == "__main__":
    main()
