"""DCGAN training speed through Atelier against the same model trained by a plain
`model.fit`, with checkpoints at the default interval (`checkpoint_every` 200).

    python bench/bench_dcgan.py [--steps 100] [--epochs 2] [--repeats 2] [--e2e-repeats 0]

The defaults (glyphs 28x28, batch 32, latent 128: the reference's settings) make each
run 200 steps, the shortest run that holds one checkpoint at the default interval. A
step costs 0.6 to 1.6 CPU seconds on the development machines (0.3 to 0.8 s of wall
time on two cores), so the default run takes 5 to 12 minutes; each e2e repeat adds 1
to 3. On a shared machine the wall figures swing with other processes' load (printed
with every run): add repeats.

Subjects, run in one process and alternated (the order rotates every repeat, so with
two subjects and two repeats the runs go A B B A):

- atelier: a dcgan job run by the worker's own `worker.runtime.execute` in this process,
  on a temporary SQLite database: claim, lease heartbeat thread, the real
  `RunContext` (throttled progress writes, metrics events, a sample grid per epoch,
  atomic fsynced checkpoints recorded as outputs), `generator.keras` at the end. The
  context class is swapped for a subclass that only adds clocks around its methods. The
  process model cache is cleared before each run, so every run builds and traces, as
  the baseline does.
- fit: the reference's GAN (`keras.Model` with the Keras DCGAN example's `train_step`:
  discriminator update then generator update, the same losses, label noise, Adam
  settings and the networks of `kinds.dcgan.model`) trained by `model.fit` on a
  shuffled, batched, prefetched `tf.data.Dataset` of the same glyph images, verbose=0.
- e2e (with --e2e-repeats N, in the first N repeats): the same job submitted to a real
  `atelier up --workers 1` stack, timed from its own events. The stack's first job (a
  short warm-up) imports TensorFlow and builds the models, so measured jobs find a warm
  worker.

Both in-process subjects get a short warm-up run first (process-wide TensorFlow start-up
costs). What is timed, the same way for both:

- steady steps/s, the headline: steps 2..N, from the end of step 1 to the end of the
  last step. Step 1 holds the trace of the train step in both (`model.fit` traces its
  train function on its first step, the job traces the cached train step when it builds
  it), so leaving it out compares training, not tracing. What a job does between steps
  (progress writes, epoch metrics, sample grids, checkpoints) is inside the window: that
  is the cost being measured. For fit the window ends when `fit` returns; for the job
  at the end of the last step's `boundary`. The final `generator.keras` save comes after
  the loop and is reported with the job's wall time, not in steps/s. For e2e the window
  is the first `progress` event (step 1 done) to the last `metrics` event (the last step
  done, before its sample grid).
- loop steps/s including step 1 (its trace): from the start of training (`fit`'s
  on_train_begin; the job's `restore` call, after data loading and the model build) to
  the same end. Both build and trace afresh every run.
- steps per CPU second over the same window as the steady rate: CPU time of all threads
  of this process (TensorFlow's pools, tf.data, the heartbeat). On a shared machine,
  other processes' load moves wall time a lot and this little; read both.
- checkpoint share: time inside checkpoint saves (the snapshot's `state.arrays()`, the
  .npz write, fsyncs and renames, hashing and recording the output) over the job's wall
  time (`execute` from claim to the recorded success); and per checkpoint interval,
  which is what a long job pays: save / (save + checkpoint_every steps at the steady
  rate).

No timed asserts: this prints figures next to their targets (atelier >= 0.95x plain
fit; checkpointing < 3% of the wall time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from bench.bench_warm_start import EmbeddedStack, event_times  # noqa: E402
from core.settings import Settings, load_settings  # noqa: E402
from db import jobs  # noqa: E402
from db.engine import session_factory  # noqa: E402
from db.migrate import ensure_current  # noqa: E402
from kinds.contract import Checkpoint  # noqa: E402
from kinds.datasets import load_images  # noqa: E402
from kinds.dcgan.model import build_discriminator, build_generator  # noqa: E402
from kinds.dcgan.train import GENERATED_LABEL, REAL_LABEL  # noqa: E402
from scheduler.specs import validate_spec  # noqa: E402
from worker import runtime  # noqa: E402
from worker.run_context import RunContext  # noqa: E402

SUBJECTS = ("atelier", "fit", "e2e")
IMAGE_SIZE, CHANNELS, BATCH_SIZE, LATENT_DIM = 28, 1, 32, 128
LEARNING_RATE, LABEL_NOISE, CHECKPOINT_EVERY = 1e-4, 0.05, 200
WARMUP_STEPS = 10
E2E_TIMEOUT_SECONDS = 1800.0


@dataclass
class Timing:
    """Clock readings (time.perf_counter, or seconds since the job started for e2e)."""

    steps: int = 0
    began: float = float("nan")  # the job / fit call starts
    loop_start: float = float("nan")  # training starts: data loaded, models built
    first_step_end: float = float("nan")
    first_step_cpu: float = float("nan")  # time.process_time: CPU of all our threads
    end: float = float("nan")  # the last step is done
    end_cpu: float = float("nan")
    wall: float = float("nan")  # the whole job (claim to success) / the whole fit call
    checkpoints: int = 0
    checkpoint_seconds: float = 0.0
    checkpoint_bytes: int = 0
    progress_seconds: float = 0.0  # progress reports and their throttled database writes
    metrics_seconds: float = 0.0
    epoch_end_seconds: float = 0.0  # from metrics() to the boundary: event, sample grid

    @property
    def steady_rate(self) -> float:
        return (self.steps - 1) / (self.end - self.first_step_end)

    @property
    def cpu_per_step(self) -> float:
        """CPU seconds (all threads of this process) per step, steps 2..N."""
        return (self.end_cpu - self.first_step_cpu) / (self.steps - 1)

    @property
    def loop_rate(self) -> float:
        return self.steps / (self.end - self.loop_start)

    def __str__(self) -> str:
        cpu = "" if np.isnan(self.end_cpu) else f", {self.cpu_per_step:.2f} CPU s/step"
        return f"{self.steady_rate:6.3f} steps/s (steps 2..{self.steps}){cpu}"


# --- atelier: the job kind through the worker runtime, in this process ------------------


class TimedContext(RunContext):
    """The runtime's context, unchanged, with clocks around what a job calls."""

    latest: ClassVar[TimedContext | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timing = Timing()
        self._epoch_end_began: float | None = None
        TimedContext.latest = self

    def restore(self) -> Checkpoint | None:
        self.timing.loop_start = time.perf_counter()  # _Trainer.run's first call
        return super().restore()

    def boundary(self, step: int, snapshot: Callable[[], Checkpoint]) -> None:
        if self._epoch_end_began is not None:  # the kind ended an epoch before this boundary
            self.timing.epoch_end_seconds += time.perf_counter() - self._epoch_end_began
            self._epoch_end_began = None
        super().boundary(step, self._timed_snapshot(snapshot))
        now, cpu = time.perf_counter(), time.process_time()
        self.timing.steps += 1
        if self.timing.steps == 1:
            self.timing.first_step_end, self.timing.first_step_cpu = now, cpu
        self.timing.end, self.timing.end_cpu = now, cpu

    def _timed_snapshot(self, snapshot: Callable[[], Checkpoint]) -> Callable[[], Checkpoint]:
        def timed() -> Checkpoint:
            began = time.perf_counter()
            checkpoint = snapshot()
            self.timing.checkpoint_seconds += time.perf_counter() - began
            return checkpoint

        return timed

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        began = time.perf_counter()
        super().save_checkpoint(checkpoint)
        self.timing.checkpoint_seconds += time.perf_counter() - began
        self.timing.checkpoints += 1
        self.timing.checkpoint_bytes = self.checkpoints.latest.stat().st_size

    def progress(self, step: int, total: int, **kwargs: Any) -> None:
        began = time.perf_counter()
        super().progress(step, total, **kwargs)
        self.timing.progress_seconds += time.perf_counter() - began

    def metrics(self, values: Mapping[str, float], **kwargs: Any) -> None:
        began = self._epoch_end_began = time.perf_counter()
        super().metrics(values, **kwargs)
        self.timing.metrics_seconds += time.perf_counter() - began


def local_settings() -> Settings:
    """A temporary home with its own SQLite database and no Redis (nothing dispatches)."""
    settings = load_settings({"ATELIER_HOME": tempfile.mkdtemp(prefix="atelier-bench-dcgan-")})
    ensure_current(settings.database_url)
    return settings


def atelier_run(settings: Settings, spec: dict[str, Any]) -> Timing:
    values = validate_spec("dcgan", spec, settings).values
    sessions = session_factory(settings.database_url)
    with sessions.begin() as session:
        job_id = jobs.create_job(session, kind="dcgan", spec=values, queue="gpu").id
        jobs.mark_queued(session, job_id)
    runtime.PROCESS_CACHE.clear()  # build and trace, like the baseline
    with mock.patch.object(runtime, "RunContext", TimedContext):
        began = time.perf_counter()
        outcome = runtime.execute(job_id, "dcgan", owner="bench", settings=settings)
        wall = time.perf_counter() - began
    if outcome != "succeeded" or TimedContext.latest is None:
        raise RuntimeError(f"dcgan job {job_id}: {outcome}")
    timing = TimedContext.latest.timing
    timing.began, timing.wall = began, wall
    shutil.rmtree(settings.outputs_dir / job_id, ignore_errors=True)  # ~45 MB of checkpoints
    return timing


# --- fit: the reference GAN trained by model.fit -----------------------------------------


class PlainDcgan(keras.Model):
    """The Keras DCGAN example's model, with Atelier's networks and hyperparameters."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.generator = build_generator(IMAGE_SIZE, CHANNELS, LATENT_DIM)
        self.discriminator = build_discriminator(IMAGE_SIZE, CHANNELS)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_metric = keras.metrics.Mean(name="d_loss")
        self.g_loss_metric = keras.metrics.Mean(name="g_loss")

    def compile(self, learning_rate: float) -> None:  # type: ignore[override]
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


class StepClock(keras.callbacks.Callback):
    """Notes when training starts and when step 1 ended. Only batch *begin* is hooked:
    a batch-end hook would make Keras give up its asynchronous callback dispatch."""

    def __init__(self) -> None:
        super().__init__()
        self.loop_start = self.first_step_end = self.first_step_cpu = float("nan")

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.loop_start = time.perf_counter()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if batch == 1 and np.isnan(self.first_step_end):
            self.first_step_end, self.first_step_cpu = time.perf_counter(), time.process_time()


def image_dataset(images: np.ndarray, seed: int) -> tf.data.Dataset:
    return (
        tf.data.Dataset.from_tensor_slices(images)
        .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        .batch(BATCH_SIZE, drop_remainder=True)
        .map(lambda batch: tf.cast(batch, tf.float32) / 255.0, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def fit_run(images: np.ndarray, epochs: int) -> Timing:
    """`len(images)` is steps_per_epoch * batch_size: each epoch is one pass of the data."""
    began = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = PlainDcgan(seed=0)
    model.compile(LEARNING_RATE)
    clock = StepClock()
    data = image_dataset(images, seed=0)  # shuffled by tf.data, each epoch
    model.fit(data, epochs=epochs, shuffle=False, verbose=0, callbacks=[clock])
    end, end_cpu = time.perf_counter(), time.process_time()
    return Timing(
        steps=epochs * (len(images) // BATCH_SIZE),
        began=began,
        loop_start=clock.loop_start,
        first_step_end=clock.first_step_end,
        first_step_cpu=clock.first_step_cpu,
        end=end,
        end_cpu=end_cpu,
        wall=end - began,
    )


# --- e2e: the same job through `atelier up --workers 1` ----------------------------------


def e2e_run(stack: EmbeddedStack, spec: dict[str, Any]) -> Timing:
    job_id = stack.client.submit("dcgan", spec)
    view = stack.client.wait(job_id, timeout=E2E_TIMEOUT_SECONDS, poll=0.5)
    if view.status != "succeeded":
        raise RuntimeError(f"dcgan job {job_id} {view.status}: {view.error_message}")
    events = stack.client.events(job_id)
    started = event_times(events, "started")[-1]

    def since_start(moment: datetime) -> float:
        return (moment - started).total_seconds()

    return Timing(
        steps=view.total_steps or 0,
        began=0.0,
        first_step_end=since_start(event_times(events, "progress")[0]),
        end=since_start(event_times(events, "metrics")[-1]),
        wall=since_start(event_times(events, "succeeded")[-1]),
    )


# --- the run ----------------------------------------------------------------------------


def job_spec(steps: int, epochs: int) -> dict[str, Any]:
    return {
        "dataset": "glyphs",
        "image_size": IMAGE_SIZE,
        "batch_size": BATCH_SIZE,
        "latent_dim": LATENT_DIM,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "dataset_size": steps * BATCH_SIZE,  # one epoch is one pass, as for fit
        "checkpoint_every": CHECKPOINT_EVERY,
        "learning_rate": LEARNING_RATE,
        "label_noise": LABEL_NOISE,
        "seed": 0,
    }


def subjects(repeat: int, e2e_repeats: int) -> list[str]:
    """This repeat's subjects, in an order that rotates from one repeat to the next."""
    names = list(SUBJECTS if repeat < e2e_repeats else SUBJECTS[:2])
    shift = repeat % len(names)
    return names[shift:] + names[:shift]


def measure(args: argparse.Namespace, stack: EmbeddedStack | None) -> dict[str, list[Timing]]:
    spec = job_spec(args.steps, args.epochs)
    images = load_images("glyphs", IMAGE_SIZE, seed=0, limit=spec["dataset_size"])
    settings = local_settings()
    runs: dict[str, Callable[[], Timing]] = {
        "atelier": lambda: atelier_run(settings, spec),
        "fit": lambda: fit_run(images, args.epochs),
    }
    warmup = job_spec(WARMUP_STEPS, 1)
    if stack is not None:
        runs["e2e"] = lambda: e2e_run(stack, spec)
        e2e_warmup = stack.client.submit("dcgan", warmup)  # build, trace
    atelier_run(settings, warmup)  # process-wide TensorFlow start-up costs
    fit_run(images[: WARMUP_STEPS * BATCH_SIZE], 1)
    if stack is not None:
        stack.client.wait(e2e_warmup, timeout=E2E_TIMEOUT_SECONDS, poll=0.5)
    results: dict[str, list[Timing]] = {name: [] for name in runs}
    try:
        for repeat in range(args.repeats):
            for name in subjects(repeat, args.e2e_repeats if stack else 0):
                results[name].append(runs[name]())
                timing = results[name][-1]
                print(
                    f"  repeat {repeat + 1} {name:8s} {timing}; load {load_average()}", flush=True
                )
    finally:
        shutil.rmtree(settings.home, ignore_errors=True)
    return results


# --- the report -------------------------------------------------------------------------


def load_average() -> str:
    """Other processes' load skews wall-clock figures; the CPU figures much less."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def median(values: list[float]) -> float:
    return statistics.median(values)


def rates(timings: list[Timing], rate: Callable[[Timing], float]) -> str:
    return "[" + ", ".join(f"{rate(t):.2f}" for t in timings) + "]"


LABELS = {
    "fit": "plain model.fit",
    "atelier": "atelier, runtime.execute",
    "e2e": "atelier, atelier up (e2e)",
}


def report_rates(
    results: dict[str, list[Timing]], title: str, rate: Callable[[Timing], float]
) -> None:
    """Median rate per subject, its runs, and each subject's ratio to fit."""
    print(title)
    medians = {name: median([rate(t) for t in timings]) for name, timings in results.items()}
    for name, timings in results.items():
        print(f"  {LABELS[name]:27s} {medians[name]:7.2f}   {rates(timings, rate)}")
    for name in [name for name in results if name != "fit"]:
        fits = results["fit"][: len(results[name])]  # e2e ran in the first repeats only
        ratio = medians[name] / median([rate(t) for t in fits])
        per_repeat = [rate(mine) / rate(fit) for mine, fit in zip(results[name], fits, strict=True)]
        print(
            f"  ratio {name}/fit {'':>{20 - len(name)}} {ratio:7.3f}   "
            f"(target >= 0.95; per repeat {', '.join(f'{r:.3f}' for r in per_repeat)})"
        )


def report_checkpoints(atelier: list[Timing]) -> None:
    print(f"checkpoints (atelier, every {CHECKPOINT_EVERY} steps)")
    if not all(t.checkpoints for t in atelier):
        print(f"  none: a run of {atelier[0].steps} steps is shorter than the interval")
        return
    per_save = median([t.checkpoint_seconds / t.checkpoints for t in atelier])
    share = median([t.checkpoint_seconds / t.wall for t in atelier])
    interval = median([CHECKPOINT_EVERY / t.steady_rate for t in atelier])
    print(
        f"  {atelier[0].checkpoints} per job of {atelier[0].steps} steps, "
        f"{atelier[0].checkpoint_bytes / 1e6:.1f} MB, {per_save * 1000:.0f} ms per save "
        "(snapshot, .npz write, fsyncs, hash, output record)"
    )
    print(f"  {'share of the job wall time':40s} {share:6.2%}   (target < 3%)")
    long_run = per_save / (per_save + interval)
    label = f"share of a {CHECKPOINT_EVERY}-step interval (long runs)"
    print(f"  {label:40s} {long_run:6.2%}   (target < 3%)")


def report_breakdown(atelier: list[Timing]) -> None:
    def part(label: str, seconds: Callable[[Timing], float]) -> None:
        print(f"  {label:44s} {median([seconds(t) for t in atelier]):7.2f} s")

    print("where an atelier job's time goes (median)")
    part("job wall: claim to recorded success", lambda t: t.wall)
    part("before training: kind import, data, build", lambda t: t.loop_start - t.began)
    part("step 1 (trace)", lambda t: t.first_step_end - t.loop_start)
    part("steps 2..N", lambda t: t.end - t.first_step_end)
    part("  in progress() (throttled DB writes)", lambda t: t.progress_seconds)
    part("  at epoch ends (metrics event, sample grid)", lambda t: t.epoch_end_seconds)
    part("    of which in metrics() (the event)", lambda t: t.metrics_seconds)
    part("  in checkpoints", lambda t: t.checkpoint_seconds)
    part("after training: generator.keras, finish", lambda t: t.began + t.wall - t.end)


def report_e2e(e2e: list[Timing]) -> None:
    print("end-to-end jobs (events of the job, warm worker)")
    walls = ", ".join(f"{t.wall:.1f}" for t in e2e)
    print(f"  started -> succeeded  {median([t.wall for t in e2e]):7.2f} s   [{walls}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--e2e-repeats",
        type=int,
        default=0,
        help="also run the job through `atelier up --workers 1` in this many of the repeats "
        "(each costs one more training run)",
    )
    args = parser.parse_args()

    began = time.perf_counter()
    print(
        f"DCGAN, glyphs {IMAGE_SIZE}x{IMAGE_SIZE}, batch {BATCH_SIZE}, latent {LATENT_DIM}: "
        f"{args.epochs} epochs x {args.steps} steps, checkpoint_every {CHECKPOINT_EVERY}; "
        f"{args.repeats} repeats, order rotated; load average {load_average()}"
    )
    if args.e2e_repeats:
        with EmbeddedStack(workers=1, prefix="atelier-bench-dcgan-e2e-") as stack:
            results = measure(args, stack)
    else:
        results = measure(args, None)
    report_rates(results, "steady steps/s (steps 2..N)    median   runs", lambda t: t.steady_rate)
    loop = {k: v for k, v in results.items() if k != "e2e"}  # e2e has no loop start
    report_rates(loop, "loop steps/s incl. step 1 (trace), both cold", lambda t: t.loop_rate)
    report_rates(
        loop,
        "steps per CPU second, steps 2..N (all threads of this process; moved less than wall "
        "time by other processes' load)",
        lambda t: 1 / t.cpu_per_step,
    )
    report_checkpoints(results["atelier"])
    report_breakdown(results["atelier"])
    if "e2e" in results:
        report_e2e(results["e2e"])
    print(f"({time.perf_counter() - began:.0f} s in all; load average now {load_average()})")


if __name__ == "__main__":
    main()
