"""What watching a run costs: TensorBoard's event files and the quality metrics (fid,
val_loss), as a share of a training job's time.

    python bench/bench_watching.py [--steps 64] [--epochs 2] [--repeats 2] [--quick]
                                   [--json FILE]

Arms, in one process, interleaved (order reversed every repeat), after an untimed
warm-up of each (the glyph classifier is trained once per machine and cached; the
warm-up pays for it):

- dcgan: glyphs 28x28, batch 32, latent 128 (the reference's sizes), an epoch of
  `--steps` steps, a checkpoint every 200 steps; `quality` on (fid of 500 generated
  images against 1000 training images at each epoch's end) and off.
- text-lm: the LSTM at the reference's sizes (sequence 60, stride 3, 128 units, batch
  128) on a generated corpus; `quality` on (val_loss on the held-out tenth) and off.

Both run through the worker's own `worker.runtime.execute` in this process
(harness.LocalRuntime), so TensorBoard's records are written in every arm; their cost is
clocked inside the run (the records, the event files, publishing and recording them).

Figures: the steady steps/s of quality on over off (the cost of the metrics, paid at
epoch ends, over the whole job), seconds per evaluation, and TensorBoard's share of the
job's wall time.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

from tests.fixtures.data import write_corpus
from worker.summaries import Summaries

BATCH_SIZE = 32


class BoardClock(harness.TimedContext):
    """The timed context with a clock around every TensorBoard call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.summaries is not None:
            self.summaries = _clocked(self.summaries, self.seconds)

    def _publish_summaries(self) -> Any:
        began = time.perf_counter()
        published = super()._publish_summaries()
        self.seconds["tensorboard"] += time.perf_counter() - began
        return published


def _clocked(summaries: Summaries, seconds: Any) -> Summaries:
    for name in ("scalars", "image", "text", "segment", "published"):
        method = getattr(summaries, name)

        @functools.wraps(method)
        def timed(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                seconds["tensorboard"] += time.perf_counter() - began

        setattr(summaries, name, timed)
    return summaries


def specs(args: argparse.Namespace, corpus: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    dcgan = dict(
        dataset="glyphs", image_size=28, batch_size=BATCH_SIZE, latent_dim=128,
        epochs=args.epochs, steps_per_epoch=args.steps, dataset_size=args.steps * BATCH_SIZE,
    )  # fmt: skip
    text = dict(
        corpus=str(corpus), architecture="lstm", epochs=args.epochs, steps_per_epoch=args.steps,
        generate_length=40, temperatures=[1.0],
    )  # fmt: skip
    if args.quick:
        text |= dict(batch_size=8, sequence_length=20, lstm_units=16)
    return {"dcgan": ("dcgan", dcgan), "text-lm": ("text-lm", text)}


def main() -> None:
    parser = harness.parser(__doc__, repeats=2)
    parser.add_argument("--steps", type=int, default=64, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    args = harness.parse(parser, {"steps": 3, "epochs": 2, "repeats": 1})
    report = harness.Report("watching", args)
    with harness.LocalRuntime() as runtime, tempfile.TemporaryDirectory() as folder:
        corpus = write_corpus(Path(folder), files=3, lines=400)
        for case, (kind, spec) in specs(args, corpus).items():
            print(f"{case}:", flush=True)
            arms = {
                f"{case}_{label}": functools.partial(
                    runtime.run, kind, {**spec, "quality": on}, context=BoardClock
                )
                for label, on in (("on", True), ("off", False))
            }
            runs = harness.interleave(arms, args.repeats, describe=_described)
            _report(report, case, runs[f"{case}_on"], runs[f"{case}_off"], args.epochs)


def _described(run: harness.Run) -> str:
    return f"{run.ctx.window().steady_rate:.2f} steps/s, {run.wall:.1f} s"


def _report(
    report: harness.Report, case: str, on: list[harness.Run], off: list[harness.Run], epochs: int
) -> None:
    report.ratio(
        f"{case}_steps_per_s_quality_ratio",
        [run.ctx.window().steady_rate for run in on],
        [run.ctx.window().steady_rate for run in off],
        arm="quality on", baseline="quality off",
        what="steady steps/s with the quality metrics / without",
    )  # fmt: skip
    extra = [(a.wall - b.wall) / epochs for a, b in zip(on, off, strict=True)]
    added = "job wall time added per evaluation (quality on - off, per epoch)"
    report.figure(f"{case}_evaluation_s", harness.median(extra), "s", what=added)
    shares = [run.ctx.seconds["tensorboard"] / run.wall * 100 for run in on + off]
    spent = "time in TensorBoard records and event files / the job's wall time"
    report.figure(f"{case}_tensorboard_share", harness.median(shares), "%", runs=shares, what=spent)


if __name__ == "__main__":
    main()
