"""VAE training speed through Atelier against a plain `model.fit` of the same VAE on the
same data, in one process.

    python bench/bench_training.py [--repeats 5] [--images 8192] [--epochs 4]
                                   [--quick] [--json FILE]

Atelier: a `vae` job in a temporary ATELIER_HOME (SQLite database), run by the worker
runtime itself (bench/harness.py LocalRuntime: `worker.runtime.execute`, claim, lease
heartbeat, RunContext with throttled progress writes, metrics events, checkpoints every
`checkpoint_every` steps, the latent-grid PNG after every epoch, the final
encoder/decoder outputs). Baseline: the reference's `keras.Model` subclass with a custom
`train_step` (same encoder, decoder, losses and Adam), compiled (not `run_eagerly`,
which the reference text uses and which is several times slower) and trained with
`fit(x, batch_size=128, shuffle=True)` on the same images as float32.

Both are timed from the end of the first epoch to the end of the last (the job: its
first and last sample grids; fit: on_epoch_end), so tracing and warm-up are left out of
both; the Atelier side still pays for its per-epoch grid (900 decoded images at the
default grid_size 30) and its checkpoints inside that window. The two alternate, order
reversed every repeat, after one untimed warm-up run each (the job's builds the models
the later jobs find in the process cache); medians and the paired ratio.
"""

from __future__ import annotations

from typing import Any

import harness
import keras
import numpy as np
import tensorflow as tf

from kinds.datasets import load_images
from kinds.vae.model import Sampler, build_decoder, build_encoder, vae_losses

BATCH_SIZE = 128  # the reference's


class PlainVae(keras.Model):
    """The reference's VAE: encoder, sampler, decoder and a custom train_step."""

    def __init__(self, encoder: keras.Model, decoder: keras.Model) -> None:
        super().__init__()
        self.encoder, self.decoder, self.sampler = encoder, decoder, Sampler()
        self.seeds = keras.random.SeedGenerator(0)
        names = ("total_loss", "reconstruction_loss", "kl_loss")
        self.trackers = [keras.metrics.Mean(name=name) for name in names]

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return self.trackers

    def train_step(self, data: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            z_mean, z_log_var = self.encoder(data, training=True)
            epsilon = keras.random.normal(tf.shape(z_mean), seed=self.seeds)
            reconstruction = self.decoder(self.sampler(z_mean, z_log_var, epsilon))
            reconstruction_loss, kl_loss = vae_losses(data, reconstruction, z_mean, z_log_var)
            total_loss = reconstruction_loss + kl_loss
        grads = tape.gradient(total_loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        losses = (total_loss, reconstruction_loss, kl_loss)
        for tracker, value in zip(self.trackers, losses, strict=True):
            tracker.update_state(value)
        return {tracker.name: tracker.result() for tracker in self.trackers}


def atelier_run(runtime: harness.LocalRuntime, spec: dict[str, Any]) -> float:
    """Steps/s of one vae job, from its first epoch's grid to its last."""
    grids = runtime.run("vae", spec).ctx.saved_at("sample")
    return harness.rate(grids, (spec["epochs"] - 1) * (spec["dataset_size"] // BATCH_SIZE))


def fit_run(images: np.ndarray, epochs: int) -> float:
    """Steps/s of the reference VAE trained with model.fit, after its first epoch."""
    size = images.shape[1]
    vae = PlainVae(build_encoder(size, 1, 2), build_decoder(size, 1, 2))
    vae.compile(optimizer=keras.optimizers.Adam())
    clock = harness.FitClock()
    vae.fit(
        images, epochs=epochs, batch_size=BATCH_SIZE, shuffle=True, verbose=0,
        callbacks=[clock.callback()],
    )  # fmt: skip
    return harness.rate(clock.epoch_ends, (epochs - 1) * (len(images) // BATCH_SIZE))


def main() -> None:
    parser = harness.parser(__doc__, repeats=5)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=4)
    args = harness.parse(parser, quick={"repeats": 1, "images": 512, "epochs": 2})
    report = harness.Report("vae", args)
    spec = {"dataset": "glyphs", "dataset_size": args.images, "epochs": args.epochs}
    spec["quality"] = False  # model.fit measures no FID
    images = load_images("glyphs", 28, seed=0, limit=args.images).astype("float32") / 255.0
    print(
        f"VAE (reference sizes, batch {BATCH_SIZE}) on {args.images} glyphs, {args.epochs} "
        f"epochs x {args.images // BATCH_SIZE} steps; steps/s after epoch 1"
    )
    with harness.LocalRuntime("atelier-bench-vae-") as runtime:
        rates = harness.interleave(
            {
                "atelier": lambda: atelier_run(runtime, spec),
                "fit": lambda: fit_run(images, args.epochs),
            },
            args.repeats,
            warmup={
                "atelier": lambda: atelier_run(runtime, spec),
                "fit": lambda: fit_run(images, 2),
            },
            describe=lambda steps_per_s: f"{steps_per_s:.2f} steps/s",
        )
    report.ratio(
        "train_steps_per_s_ratio", rates["atelier"], rates["fit"], arm="atelier",
        baseline="model.fit", target=">= 0.95", what="steps/s after epoch 1",
    )  # fmt: skip


if __name__ == "__main__":
    main()
