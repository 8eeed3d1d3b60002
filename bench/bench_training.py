"""VAE training speed through Atelier against a plain `model.fit` of the same VAE on the
same data, in one process.

    python bench/bench_training.py [--repeats 5] [--images 8192] [--epochs 4]

Atelier: a `vae` job in a temporary ATELIER_HOME (SQLite database), run by the worker
runtime itself (`worker.runtime.execute`: claim, lease heartbeat, RunContext with
throttled progress writes, metrics events, checkpoints every `checkpoint_every` steps, the
latent-grid PNG after every epoch, the final encoder/decoder outputs). Baseline: the
reference's `keras.Model` subclass with a custom `train_step` (same encoder, decoder,
losses and Adam), compiled (not `run_eagerly`, which the reference text uses and which
is several times slower) and trained with `fit(x, batch_size=128, shuffle=True)` on
the same images as float32.

Both are timed from the end of the first epoch to the end of the last, so tracing and
warm-up are left out of both; the Atelier side still pays for its per-epoch grid (900
decoded images at the default grid_size 30) and its checkpoint inside that window. The
two alternate, order flipped every repeat, after one untimed warm-up run each; medians
are reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BATCH_SIZE = 128  # the reference's


def atelier_run(settings: Any, spec: dict[str, Any]) -> float:
    """Steps/s of one vae job run by the worker runtime, after its first epoch."""
    from db import jobs
    from worker import runtime
    from worker.run_context import RunContext

    stamps: list[float] = []

    class TimedContext(RunContext):
        def save_output(self, role: str, name: str, *args: Any, **kwargs: Any) -> Path:
            path = super().save_output(role, name, *args, **kwargs)
            if role == "sample":
                stamps.append(time.perf_counter())
            return path

    sessions = runtime.session_factory(settings.database_url)
    with sessions.begin() as session:
        job_id = jobs.create_job(session, kind="vae", spec=spec, queue="gpu").id
        jobs.mark_queued(session, job_id)
    runtime.RunContext = TimedContext  # type: ignore[misc]
    try:
        outcome = runtime.execute(job_id, "vae", "bench@local", settings)
    finally:
        runtime.RunContext = RunContext  # type: ignore[misc]
    if outcome != "succeeded":
        raise RuntimeError(f"vae job {job_id} ended {outcome}")
    steps = (spec["epochs"] - 1) * (spec["dataset_size"] // BATCH_SIZE)
    return steps / (stamps[-1] - stamps[0])


def fit_run(images: Any, epochs: int) -> float:
    """Steps/s of the reference VAE trained with model.fit, after its first epoch."""
    import keras
    import tensorflow as tf

    from kinds.vae.model import Sampler, build_decoder, build_encoder, vae_losses

    class VAE(keras.Model):
        def __init__(self, encoder: keras.Model, decoder: keras.Model) -> None:
            super().__init__()
            self.encoder, self.decoder, self.sampler = encoder, decoder, Sampler()
            self.seeds = keras.random.SeedGenerator(0)
            self.trackers = [
                keras.metrics.Mean(name=name)
                for name in ("total_loss", "reconstruction_loss", "kl_loss")
            ]

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
            for tracker, value in zip(
                self.trackers, (total_loss, reconstruction_loss, kl_loss), strict=True
            ):
                tracker.update_state(value)
            return {tracker.name: tracker.result() for tracker in self.trackers}

    stamps: list[float] = []

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            stamps.append(time.perf_counter())

    size = images.shape[1]
    vae = VAE(build_encoder(size, 1, 2), build_decoder(size, 1, 2))
    vae.compile(optimizer=keras.optimizers.Adam())
    vae.fit(
        images, epochs=epochs, batch_size=BATCH_SIZE, shuffle=True, verbose=0,
        callbacks=[EpochTimes()],
    )  # fmt: skip
    steps = (epochs - 1) * (len(images) // BATCH_SIZE)
    return steps / (stamps[-1] - stamps[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="atelier-bench-training-"))
    os.environ["ATELIER_HOME"] = str(home)
    from core.settings import load_settings
    from db.migrate import ensure_current
    from kinds.datasets import load_images

    settings = load_settings()
    ensure_current(settings.database_url)
    spec = {"dataset": "glyphs", "dataset_size": args.images, "epochs": args.epochs}
    images = load_images("glyphs", 28, seed=0, limit=args.images).astype("float32") / 255.0

    print(f"VAE (reference sizes, batch {BATCH_SIZE}) on {args.images} glyphs, "
          f"{args.epochs} epochs x {args.images // BATCH_SIZE} steps; "
          f"steps/s after epoch 1; home {home}")  # fmt: skip
    atelier_run(settings, spec)  # warm-up: builds and traces the cached models
    fit_run(images, 2)
    atelier, fit, ratios = [], [], []
    for repeat in range(args.repeats):
        order = ("atelier", "fit") if repeat % 2 == 0 else ("fit", "atelier")
        result = {}
        for arm in order:
            result[arm] = (
                atelier_run(settings, spec) if arm == "atelier" else fit_run(images, args.epochs)
            )
        atelier.append(result["atelier"])
        fit.append(result["fit"])
        ratios.append(result["atelier"] / result["fit"])
        print(f"  repeat {repeat + 1}: atelier {result['atelier']:7.1f} steps/s   "
              f"fit {result['fit']:7.1f} steps/s   ratio {ratios[-1]:.3f}")  # fmt: skip
    print(f"median: atelier {statistics.median(atelier):.1f} steps/s, "
          f"model.fit {statistics.median(fit):.1f} steps/s, "
          f"ratio of medians {statistics.median(atelier) / statistics.median(fit):.3f}, "
          f"median of paired ratios {statistics.median(ratios):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
