"""pix2pix and CycleGAN training speed through Atelier against a plain compiled training
loop of the same networks on the same data, in one process.

    python bench/bench_translation.py [--kinds pix2pix,cyclegan] [--repeats 2]
        [--image-size 64] [--pix2pix-filters 64] [--cyclegan-filters 32]
        [--residual-blocks 6] [--steps 50] [--epochs 2] [--checkpoint-every 100]
        [--quick] [--json FILE]

Sizes (the papers' are 256 px, batch 1, 64 base filters): 64 px (loaded at 72 for the
random jitter), batch 1, the built-in glyph-outlines / glyph-inks, 2 epochs x 50 steps
per run and checkpoint_every 100, so each run holds two epoch ends and one checkpoint
(at its last step, inside the window). pix2pix keeps the 64 base filters (a 29 M
parameter U-Net at 64 px; a checkpoint with both Adams' slots is 384 MB; 0.17 to 0.35 s
a step on two cores, depending on the load). CycleGAN has 32 (0.2 to 0.45 s a step; at
64 it is 0.6 to 1.2 s, which would double the run) and its 6 residual blocks. A default
run takes about 4 minutes on the idle 2-core machine and up to 7 when other processes
load it (the load average is printed with every run: it moves the wall-clock figures);
a third of it is the untimed warm-ups, the CycleGAN step taking 15 to 50 s to trace,
once per arm. --repeats 4 tightens the medians. --quick (16 px, filters 8 and 4, one
residual block, 2 x 3 steps, one repeat) takes 25 to 50 s, mostly TensorFlow's start-up
and the two CycleGAN traces: it proves the script runs and measures nothing.

Arms, per kind, in one process, interleaved (order reversed every repeat), after an
untimed warm-up run of each:

- atelier: a pix2pix (glyph-outlines) or cyclegan (glyph-inks) job run by the worker's
  own `worker.runtime.execute` in this process (bench/harness.py LocalRuntime: claim,
  lease heartbeat, the real RunContext with throttled progress writes, a metrics event
  per epoch -- with pix2pix's `val_l1` on the held-out pairs --, the held-out grid per
  epoch, atomic fsynced checkpoints every `--checkpoint-every` steps recorded as
  outputs, the generators saved as .keras at the end), clocked by harness.TimedContext.
  The warm-up job builds and traces the process cache entry the timed jobs then reuse,
  as a worker's later jobs do (each job still resets every weight, slot and pool).
- plain: the same networks (kinds.pix2pix.model / kinds.cyclegan.model builders), the
  same losses and Adam(2e-4, beta_1=0.5) per network, one `tf.function` train step
  doing the same work (pix2pix: jitter crop and mirror, G and D updated from one
  forward pass, BCE from logits + 100 x L1, the D loss halved; CycleGAN: jitter, both
  generators and both discriminators, least squares, cycle 10 x L1, identity 5 x L1,
  a 50-image history pool per discriminator -- kinds.cyclegan.train.ImagePool --, the
  same constant-then-linear learning rate), called from a plain Python loop on batches
  of the same uint8 images (the job's training split: the held-out ones are trained on
  by neither) in a new random order every epoch (pix2pix's pairs together, CycleGAN's
  two sides each in its own order), the epoch's mean losses read at its end. No
  EpochLoop, no JobContext. Built and traced once, in its warm-up, and reset (initial
  weights, zeroed optimizers and pools) before every run. The images are indexed in
  memory (numpy), as the job's are (tensors): no tf.data, whose iterators, torn down
  at the end of an epoch in a process holding these large traced steps, stalled the
  loop for 3 to 11 s now and then.

What is timed, the same way for both (harness.Window): steady steps/s over steps 2..N,
from the end of the first step to the end of the last (the job: the end of its last
step `boundary`, so every epoch's evaluation, grid and metrics event and the
checkpoints are inside the window: they are the cost being measured; its final model
saves come after, reported in the breakdown), and steps per CPU second (all threads of
this process) over the same window, which other processes' load moves less. Figures
per kind (the BENCH lines' `bench` is the kind): the ratio of medians and the median of
the paired ratios (target >= 0.95); the same with the epoch ends and checkpoints taken
out of the job's window (step_rate_ratio: the loop's per-step cost alone), the epoch
end's seconds, and what those measured costs come to at 400 steps an epoch (facades)
and the kinds' default checkpoint_every 1000 (projected_steps_per_s_ratio), as a 50-step
epoch ends eight times as often as one of facades; the checkpoints' share
of the job's wall time (claim to recorded success; target < 3 %) and per checkpoint
interval, at the run's and at the default interval (what a long job pays); the
checkpoint's size; and where the job's time goes.

The references' GPU scale, for comparison with the CPU figures: the TensorFlow pix2pix
tutorial trains on facades at about 15 s per epoch of 400 images at 256 px on a V100
(~27 steps/s at batch 1), and the keras-io CycleGAN example at about 366 ms per step at
256 px on a P100 (~2.7 steps/s).
"""

from __future__ import annotations

import argparse
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import harness
import keras
import numpy as np
import tensorflow as tf

from kinds.cyclegan import model as cyclegan_model
from kinds.cyclegan.train import ImagePool
from kinds.image_pairs import PAIRED_GLYPHS, UNPAIRED_GLYPHS, load_pairs, load_unpaired
from kinds.keras_state import reset_optimizer
from kinds.pix2pix import model as pix2pix_model
from kinds.translation import CHECKPOINT_EVERY, jitter_size
from kinds.translation_nets import jitter, to_model_range
from worker.model_cache import PROCESS_CACHE

KINDS = ("pix2pix", "cyclegan")
DATASETS = {"pix2pix": PAIRED_GLYPHS, "cyclegan": UNPAIRED_GLYPHS}
BATCH_SIZE, HELD_OUT, SEED = 1, 4, 0  # the papers' batch; the kinds' default held_out
LEARNING_RATE, BETA_1 = 2e-4, 0.5
L1_WEIGHT, CYCLE_WEIGHT, IDENTITY_WEIGHT, POOL_SIZE = 100.0, 10.0, 5.0, 50
CYCLEGAN_BLOCKS = 6  # the kind's default below 256 px
WARMUP_STEPS = 3


@dataclass(frozen=True)
class Sizes:
    image_size: int
    filters: int
    steps: int  # per epoch: the training images, one pass
    epochs: int
    checkpoint_every: int
    blocks: int = CYCLEGAN_BLOCKS  # cyclegan only

    @property
    def load_size(self) -> int:
        return jitter_size(self.image_size)  # the kinds' jitter is on by default


@dataclass(frozen=True)
class Trained:
    window: harness.Window
    wall: float  # the job from claim to success, or the plain loop's run
    run: harness.Run | None = None  # the atelier arm's job

    def __str__(self) -> str:
        window = self.window
        return (
            f"{window.steady_rate:.3f} steps/s (steps 2..{window.steps}), "
            f"{window.cpu_rate:.3f} steps per CPU s"
        )


class EvaluationClock(harness.TimedContext):
    """TimedContext, also timing the held-out evaluation (`val_l1`): the loop calls it
    between the epoch's last progress report and its metrics event."""

    def metrics(self, values: Mapping[str, float], **kwargs: Any) -> None:
        self.seconds["evaluate"] += time.perf_counter() - self.reports[-1].at
        super().metrics(values, **kwargs)


# --- the plain loop ----------------------------------------------------------------------


def adam() -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1)


class PlainLoop(ABC):
    """Networks, an Adam for each, a traced step taking two uint8 batches, and the
    training images (two sides); `train` runs some epochs of steps and clocks them."""

    def __init__(
        self,
        sizes: Sizes,
        networks: Mapping[str, keras.Model],
        images: tuple[np.ndarray, np.ndarray],
        *,
        paired: bool,
    ) -> None:
        self.sizes, self.networks = sizes, dict(networks)
        self.images, self.paired = images, paired
        self.optimizers = {name: adam() for name in networks}
        for name, optimizer in self.optimizers.items():
            optimizer.build(self.networks[name].trainable_variables)
        self.step_count = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.initial = {name: [v.numpy() for v in net.variables] for name, net in networks.items()}
        pixels = tf.TensorSpec([None, sizes.load_size, sizes.load_size, 3], tf.uint8)
        self.train_step = tf.function(self._train_step, input_signature=[pixels, pixels])

    @abstractmethod
    def _train_step(self, first: tf.Tensor, second: tf.Tensor) -> tf.Tensor:
        """One update of every network on a batch of each side; the losses."""

    def key(self) -> tf.Tensor:
        """(seed, step) for the step's stateless random ops, then counts the step."""
        key = tf.stack([tf.constant(SEED, tf.int64), self.step_count.read_value()])
        self.step_count.assign_add(1)
        return key

    def apply(self, losses: Mapping[str, tuple[tf.GradientTape, tf.Tensor]]) -> None:
        """Each network's update from its loss on the tape that recorded it."""
        for name, (tape, loss) in losses.items():
            variables = self.networks[name].trainable_variables
            self.optimizers[name].apply(tape.gradient(loss, variables), variables)

    def reset(self, epochs: int, steps: int) -> None:
        """Back to the freshly built state: initial weights, zeroed optimizers, step 0."""
        for name, network in self.networks.items():
            for var, value in zip(network.variables, self.initial[name], strict=True):
                var.assign(value)
        for optimizer in self.optimizers.values():
            reset_optimizer(optimizer, LEARNING_RATE)
        self.step_count.assign(0)

    def orders(self, rng: np.random.Generator) -> list[np.ndarray]:
        """An epoch's order of each side: one for both if they are pairs."""
        if self.paired:
            return [rng.permutation(len(self.images[0]))] * 2
        return [rng.permutation(len(side)) for side in self.images]

    def train(self, epochs: int, steps: int) -> Trained:
        """`steps` batches an epoch (one pass of the images, or its first steps)."""
        began = time.perf_counter()
        self.reset(epochs, steps)
        rng = np.random.default_rng(SEED)
        loop_start = time.perf_counter()
        first: harness.Stamp | None = None
        done = 0
        for _ in range(epochs):
            orders, losses = self.orders(rng), []
            for step in range(steps):
                rows = slice(step * BATCH_SIZE, (step + 1) * BATCH_SIZE)
                batch = [side[order[rows]] for side, order in zip(self.images, orders, strict=True)]
                losses.append(self.train_step(*batch))  # returns when done: eager is synchronous
                done += 1
                if first is None:
                    losses[-1].numpy()
                    first = harness.Stamp.now()
            means = tf.reduce_mean(tf.stack(losses), axis=0).numpy()  # the epoch's losses
            if not np.isfinite(means).all():
                raise RuntimeError(f"plain loop: losses not finite: {means}")
        last = harness.Stamp.now()
        assert first is not None and done == epochs * steps, (done, epochs, steps)
        return Trained(harness.Window(done, loop_start, first, last), last.wall - began)


class PlainPix2Pix(PlainLoop):
    """pix2pix as the TensorFlow tutorial trains it, with the kind's networks and losses."""

    def __init__(self, sizes: Sizes) -> None:
        limit = sizes.steps * BATCH_SIZE + HELD_OUT
        sides = load_pairs(PAIRED_GLYPHS, sizes.load_size, seed=SEED, limit=limit)
        super().__init__(
            sizes,
            {
                "generator": pix2pix_model.build_generator(sizes.image_size, sizes.filters),
                "discriminator": pix2pix_model.build_discriminator(sizes.image_size, sizes.filters),
            },
            training_split(sides),
            paired=True,
        )
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    def _train_step(self, sources: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        pair = jitter(tf.concat([sources, targets], -1), self.sizes.image_size, self.key())
        pair = to_model_range(pair)
        source, target = pair[..., :3], pair[..., 3:]
        generator, discriminator = self.networks["generator"], self.networks["discriminator"]
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            generated = generator(source, training=True)
            real = discriminator(tf.concat([source, target], -1), training=True)
            fake = discriminator(tf.concat([source, generated], -1), training=True)
            g_gan = self.loss_fn(tf.ones_like(fake), fake)
            g_l1 = tf.reduce_mean(tf.abs(target - generated))
            d_loss = 0.5 * (
                self.loss_fn(tf.ones_like(real), real) + self.loss_fn(tf.zeros_like(fake), fake)
            )
            g_loss = g_gan + L1_WEIGHT * g_l1
        self.apply({"generator": (g_tape, g_loss), "discriminator": (d_tape, d_loss)})
        return tf.stack([d_loss, g_gan, g_l1])


def _l1(real: tf.Tensor, made: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.abs(real - made))


def _least_squares(scores: tf.Tensor, target: float) -> tf.Tensor:
    return tf.reduce_mean(tf.square(scores - target))


class PlainCycleGan(PlainLoop):
    """CycleGAN as the keras-io example trains it, with the kind's networks, losses,
    history pools and learning-rate schedule."""

    def __init__(self, sizes: Sizes) -> None:
        size, filters, blocks = sizes.image_size, sizes.filters, sizes.blocks
        limit = sizes.steps * BATCH_SIZE + HELD_OUT
        sides = load_unpaired(UNPAIRED_GLYPHS, sizes.load_size, seed=SEED, limit=limit)
        super().__init__(
            sizes,
            {
                "g": cyclegan_model.build_generator(size, blocks, filters, "generator_ab"),
                "f": cyclegan_model.build_generator(size, blocks, filters, "generator_ba"),
                "d_a": cyclegan_model.build_discriminator(size, filters, "discriminator_a"),
                "d_b": cyclegan_model.build_discriminator(size, filters, "discriminator_b"),
            },
            training_split(sides),
            paired=False,
        )
        self.pools = {side: ImagePool(POOL_SIZE, size, f"plain_pool_{side}") for side in "ab"}
        self.decay_start = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.total_steps = tf.Variable(1, dtype=tf.int64, trainable=False)

    def reset(self, epochs: int, steps: int) -> None:
        super().reset(epochs, steps)
        for pool in self.pools.values():
            pool.reset()
        self.decay_start.assign((epochs // 2) * steps)
        self.total_steps.assign(epochs * steps)

    def _train_step(self, images_a: tf.Tensor, images_b: tf.Tensor) -> tf.Tensor:
        step = self.step_count.read_value()
        keys = tf.unstack(tf.random.experimental.stateless_split(self.key(), 4))
        size = self.sizes.image_size
        real_a = to_model_range(jitter(images_a, size, keys[0]))
        real_b = to_model_range(jitter(images_b, size, keys[1]))
        remaining = tf.cast(self.total_steps - step, tf.float32)
        decaying = tf.cast(self.total_steps - self.decay_start, tf.float32)
        rate = LEARNING_RATE * tf.where(step < self.decay_start, 1.0, remaining / decaying)
        for optimizer in self.optimizers.values():
            optimizer.learning_rate.assign(rate)
        g, f, d_a, d_b = (self.networks[name] for name in ("g", "f", "d_a", "d_b"))
        with tf.GradientTape(persistent=True) as tape:
            fake_b, fake_a = g(real_a, training=True), f(real_b, training=True)
            cycle = _l1(real_a, f(fake_b, training=True)) + _l1(real_b, g(fake_a, training=True))
            identity = _l1(real_b, g(real_b, training=True)) + _l1(real_a, f(real_a, training=True))
            g_adversarial = _least_squares(d_b(fake_b, training=True), 1.0)
            f_adversarial = _least_squares(d_a(fake_a, training=True), 1.0)
            generators = (
                g_adversarial + f_adversarial + CYCLE_WEIGHT * cycle + IDENTITY_WEIGHT * identity
            )
            pooled_a = self.pools["a"].query(tf.stop_gradient(fake_a), keys[2])
            pooled_b = self.pools["b"].query(tf.stop_gradient(fake_b), keys[3])
            d_a_loss = 0.5 * (
                _least_squares(d_a(real_a, training=True), 1.0)
                + _least_squares(d_a(pooled_a, training=True), 0.0)
            )
            d_b_loss = 0.5 * (
                _least_squares(d_b(real_b, training=True), 1.0)
                + _least_squares(d_b(pooled_b, training=True), 0.0)
            )
            losses = {"g": generators, "f": generators, "d_a": d_a_loss, "d_b": d_b_loss}
        self.apply({name: (tape, loss) for name, loss in losses.items()})
        del tape
        return tf.stack(
            [g_adversarial, f_adversarial, d_a_loss, d_b_loss, cycle / 2.0, identity / 2.0]
        )


def training_split(sides: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What the job trains on: all but the last HELD_OUT images of each side (the kinds
    hold those out for the grid and val_l1)."""
    return sides[0][:-HELD_OUT], sides[1][:-HELD_OUT]


PLAIN: dict[str, Callable[[Sizes], PlainPix2Pix | PlainCycleGan]] = {
    "pix2pix": PlainPix2Pix,
    "cyclegan": PlainCycleGan,
}

# --- the job -----------------------------------------------------------------------------


def job_spec(kind: str, sizes: Sizes, steps: int, epochs: int, every: int) -> dict[str, Any]:
    spec: dict[str, Any] = dict(
        dataset=DATASETS[kind], image_size=sizes.image_size, filters=sizes.filters,
        batch_size=BATCH_SIZE, epochs=epochs, dataset_size=steps * BATCH_SIZE,  # one pass
        held_out=HELD_OUT, checkpoint_every=every, learning_rate=LEARNING_RATE,
        beta_1=BETA_1, seed=SEED,
    )  # fmt: skip
    if kind == "cyclegan":
        spec |= {"residual_blocks": sizes.blocks, "pool_size": POOL_SIZE}
    return spec


def atelier_run(runtime: harness.LocalRuntime, kind: str, spec: dict[str, Any]) -> Trained:
    run = runtime.run(kind, spec, context=EvaluationClock)
    return Trained(run.ctx.window(), run.wall, run)


def measure(
    kind: str, sizes: Sizes, repeats: int, runtime: harness.LocalRuntime
) -> dict[str, list[Trained]]:
    plain = PLAIN[kind](sizes)
    spec = job_spec(kind, sizes, sizes.steps, sizes.epochs, sizes.checkpoint_every)
    warm = min(WARMUP_STEPS, sizes.steps)
    warmup_spec = job_spec(kind, sizes, warm, 1, warm)  # one checkpoint too
    arms = {
        "atelier": lambda: atelier_run(runtime, kind, spec),
        "plain": lambda: plain.train(sizes.epochs, sizes.steps),
    }
    warmups = {
        "atelier": lambda: atelier_run(runtime, kind, warmup_spec),
        "plain": lambda: plain.train(1, warm),
    }
    return harness.interleave(arms, repeats, warmup=warmups)


# --- figures -----------------------------------------------------------------------------


RATES = (  # figure, rate, what it is, target
    ("train_steps_per_s_ratio", "steady_rate", "steady steps/s, steps 2..N", ">= 0.95"),
    ("steps_per_cpu_s_ratio", "cpu_rate", "steps per CPU second, steps 2..N", None),
)
DEFAULT_CHECKPOINT_EVERY = CHECKPOINT_EVERY  # the translation kinds' default
FACADES_EPOCH = 400  # steps per epoch of pix2pix's facades at batch 1


def report_rates(report: harness.Report, results: dict[str, list[Trained]]) -> None:
    for figure, rate, what, target in RATES:
        mine = [getattr(trained.window, rate) for trained in results["atelier"]]
        plain = [getattr(trained.window, rate) for trained in results["plain"]]
        report.ratio(
            figure, mine, plain, arm="atelier", baseline="tf.function loop", target=target,
            what=what,
        )  # fmt: skip


def epoch_end_seconds(ctx: harness.TimedContext) -> float:
    """All epochs' held-out evaluation, metrics events and grids (all inside the window)."""
    return ctx.seconds["evaluate"] + ctx.seconds["epoch_end"]


def window_seconds(ctx: harness.TimedContext) -> float:
    return ctx.steps[-1].wall - ctx.steps[0].wall


def step_seconds(ctx: harness.TimedContext) -> float:
    """A steady step of the job without the epoch ends and checkpoints: the kind's step
    with the loop's per-step work (key, loss read-back, NaN check, progress, boundary)."""
    extras = epoch_end_seconds(ctx) + sum(ctx.checkpoint_saves)
    return (window_seconds(ctx) - extras) / (len(ctx.steps) - 1)


def report_steps(report: harness.Report, results: dict[str, list[Trained]], sizes: Sizes) -> None:
    """The window taken apart: per step, per epoch end, per checkpoint; and what the
    same costs come to at facades' epoch and the default checkpoint interval."""
    runs = [trained.run for trained in results["atelier"] if trained.run is not None]
    plain = [trained.window.steady_rate for trained in results["plain"]]
    contexts = [run.ctx for run in runs]
    report.ratio(
        "step_rate_ratio", [1 / step_seconds(ctx) for ctx in contexts], plain, arm="atelier",
        baseline="tf.function loop",
        what="steps/s with the epoch ends and checkpoints taken out of the job's window",
    )  # fmt: skip
    per_epoch = [epoch_end_seconds(ctx) / sizes.epochs for ctx in contexts]
    report.figure(
        "epoch_end_s", harness.median(per_epoch), "s", runs=per_epoch,
        what="per epoch: held-out evaluation (val_l1), metrics event, grid",
    )  # fmt: skip
    saves = [harness.median(ctx.checkpoint_saves) for ctx in contexts if ctx.checkpoint_saves]
    save = harness.median(saves) if saves else 0.0
    projected = [
        (1 / rate) / (step_seconds(ctx) + epoch / FACADES_EPOCH + save / DEFAULT_CHECKPOINT_EVERY)
        for ctx, epoch, rate in zip(contexts, per_epoch, plain, strict=True)
    ]
    report.figure(
        "projected_steps_per_s_ratio", harness.median(projected), "x", runs=projected,
        target=">= 0.95", what=f"these costs at {FACADES_EPOCH} steps per epoch (facades) and "
        f"checkpoint_every {DEFAULT_CHECKPOINT_EVERY}, against the plain loop",
    )  # fmt: skip


def report_breakdown(report: harness.Report, runs: list[harness.Run]) -> None:
    """Where an atelier job's time goes (medians over the runs)."""
    parts: dict[str, Callable[[harness.Run, harness.TimedContext], float]] = {
        "job_wall_s": lambda r, c: r.wall,
        "before_training_s": lambda r, c: c.restored - r.began,  # kind import, data, reset
        "step_1_s": lambda r, c: c.steps[0].wall - c.restored,
        "steps_2_to_n_s": lambda r, c: window_seconds(c),
        "in_progress_s": lambda r, c: c.seconds["progress"],  # throttled database writes
        "in_evaluate_s": lambda r, c: c.seconds["evaluate"],  # held-out val_l1 (pix2pix)
        "at_epoch_ends_s": lambda r, c: c.seconds["epoch_end"],  # metrics event, grid
        "in_checkpoints_s": lambda r, c: sum(c.checkpoint_saves),
        "after_training_s": lambda r, c: r.began + r.wall - c.steps[-1].wall,  # .keras saves
    }
    for figure, seconds in parts.items():
        report.figure(figure, harness.median([seconds(r, r.ctx) for r in runs]), "s")


def sizes_of(kind: str, args: argparse.Namespace) -> Sizes:
    filters = args.pix2pix_filters if kind == "pix2pix" else args.cyclegan_filters
    return Sizes(
        args.image_size, filters, args.steps, args.epochs, args.checkpoint_every,
        args.residual_blocks,
    )  # fmt: skip


def main() -> None:
    parser = harness.parser(__doc__, repeats=2)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated")
    parser.add_argument("--image-size", type=int, default=64, help="a power of two")
    parser.add_argument("--pix2pix-filters", type=int, default=64, help="base filters")
    parser.add_argument("--cyclegan-filters", type=int, default=32, help="base filters")
    parser.add_argument(
        "--residual-blocks", type=int, default=CYCLEGAN_BLOCKS, help="of each CycleGAN generator"
    )
    parser.add_argument("--steps", type=int, default=50, help="steps (images) per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=100, help="the jobs' interval")
    quick = {
        "repeats": 1, "image_size": 16, "pix2pix_filters": 8, "cyclegan_filters": 4,
        "residual_blocks": 1, "steps": 3, "epochs": 2, "checkpoint_every": 3,
    }  # fmt: skip
    args = harness.parse(parser, quick)
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown kinds {sorted(unknown)}: choose from {', '.join(KINDS)}")
    with harness.LocalRuntime("atelier-bench-translation-") as runtime:
        for kind in kinds:
            sizes = sizes_of(kind, args)
            blocks = f", {sizes.blocks} residual blocks" if kind == "cyclegan" else ""
            print(
                f"{kind}, {DATASETS[kind]} {sizes.image_size}x{sizes.image_size} (loaded at "
                f"{sizes.load_size}), batch {BATCH_SIZE}, filters {sizes.filters}{blocks}: "
                f"{sizes.epochs} epochs x {sizes.steps} steps, checkpoint_every "
                f"{sizes.checkpoint_every}; {args.repeats} repeats; load average "
                f"{harness.load_average()}",
                flush=True,
            )
            results = measure(kind, sizes, args.repeats, runtime)
            PROCESS_CACHE.clear()  # the next kind's memory
            report = harness.Report(kind, args)
            report_rates(report, results)
            report_steps(report, results, sizes)
            runs = [trained.run for trained in results["atelier"] if trained.run is not None]
            harness.report_checkpoints(
                report, runs, sizes.checkpoint_every, also_at=[DEFAULT_CHECKPOINT_EVERY]
            )
            report_breakdown(report, runs)
    print(f"load average at the end {harness.load_average()}")


if __name__ == "__main__":
    main()
