"""Render kinds: style transfer's fast path against the reference loop, L-BFGS against
SGD, and cold against warm job starts of style-transfer and deepdream.

    python bench/bench_render.py [--height 64] [--iterations 15] [--repeats 3]
                                 [--sgd-iterations 200] [--style-weights 1e-6 1e-3]
                                 [--start-repeats 2] [--parts throughput lbfgs starts]
                                 [--quick] [--json FILE]

1. throughput: iterations/s of a warm style-transfer job run in this process by the
   worker runtime (bench/harness.py LocalRuntime: the real RunContext; the kind computes
   its targets once and runs one image through VGG19 per step), timed from the start of
   its loop (`restore`) to its last progress report, against the reference's loop
   (kinds/style_transfer/reference.py: content, style and generated image through VGG19
   at every step, Keras SGD with ExponentialDecay, compiled) on a VGG19 of the same
   architecture, at the same size and from the same images. Interleaved repeats after a
   warm-up of each (build, trace), medians.
2. lbfgs: an SGD job runs `--sgd-iterations` iterations (the reference runs 4000:
   reduced so the benchmark takes minutes on a CPU); then an L-BFGS job runs until its
   loss is at most SGD's loss at its last iteration. Once with the reference's style
   weight, once with 1000 times it (with random weights the total-variation term
   otherwise dominates). Times from the start of each job's loop (warm; the L-BFGS time
   includes its first evaluation at the content image).
3. starts: cold against warm job start of both kinds through a real one-worker stack, by
   bench/bench_warm_start.py (started -> first progress, from the job's events).

The backbones have random weights (`backbone_weights: none`; no ImageNet download here):
the cost per step is the same as with ImageNet weights, the loss landscape is not.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import bench_warm_start
import harness
import numpy as np
from PIL import Image

ASPECT = 4 / 3  # width / height of the synthetic content image


def make_pictures(folder: Path, height: int) -> dict[str, str]:
    """A smooth landscape-like content image and a striped style image."""
    folder.mkdir(parents=True, exist_ok=True)
    width = round(height * ASPECT)
    rows, columns = np.mgrid[0:height, 0:width] / height
    content = np.stack(
        [0.3 + 0.5 * rows, 0.4 + 0.3 * np.sin(6 * columns), 0.9 - 0.6 * rows], axis=-1
    )
    content[(rows - 0.3) ** 2 + (columns - 0.4) ** 2 < 0.02] = (1.0, 0.9, 0.3)
    content[rows > 0.7 + 0.1 * np.sin(9 * columns)] = (0.1, 0.35, 0.15)
    rows, columns = np.mgrid[0:256, 0:256]
    style = np.stack([np.sin(columns / 5), np.sin((rows + columns) / 7), np.cos(rows / 9)], axis=-1)
    paths = {"content": folder / "content.png", "style": folder / "style.png"}
    Image.fromarray(np.uint8(content * 255)).save(paths["content"])
    Image.fromarray(np.uint8((style + 1) * 127.5)).save(paths["style"])
    return {name: str(path) for name, path in paths.items()}


def loop_seconds(ctx: harness.TimedContext, reports: int | None = None) -> float:
    """From the start of the job's loop to its `reports`-th (default: last) progress report."""
    return ctx.reports[(reports or len(ctx.reports)) - 1].at - ctx.restored


def throughput(
    args: argparse.Namespace,
    runtime: harness.LocalRuntime,
    pictures: dict[str, str],
    report: harness.Report,
) -> None:
    import keras

    from kinds.images import load_rgb, vgg_preprocess
    from kinds.style_transfer import Spec
    from kinds.style_transfer.reference import ReferenceStyleTransfer

    spec = {**pictures, "height": args.height, "iterations": args.iterations,
            "snapshot_every": args.iterations, "backbone_weights": "none"}  # fmt: skip
    height, width = Spec.model_validate(spec).size
    backbone = keras.applications.VGG19(include_top=False, weights=None)
    reference = ReferenceStyleTransfer(backbone, height, width)
    content = vgg_preprocess(load_rgb(spec["content"], (height, width)))[np.newaxis]
    style = vgg_preprocess(load_rgb(spec["style"], (height, width)))[np.newaxis]
    walls: list[float] = []

    def kind() -> float:
        run = runtime.run("style-transfer", spec)
        walls.append(run.wall)
        return len(run.ctx.reports) / loop_seconds(run.ctx)

    def reference_loop() -> float:
        began = time.perf_counter()
        reference.run(content, style, args.iterations)
        return args.iterations / (time.perf_counter() - began)

    print(f"1. style transfer at {width}x{height}, VGG19 (random weights)")
    rates = harness.interleave(
        {"atelier": kind, "reference": reference_loop},
        args.repeats,
        describe=lambda iterations_per_s: f"{iterations_per_s:.2f} it/s",
    )
    report.ratio(
        "style_transfer_iterations_per_s_ratio", rates["atelier"], rates["reference"],
        arm="atelier job", baseline="reference loop (3 images through VGG19 per step)",
        target=">= 2", size=f"{width}x{height}", iterations=args.iterations,
    )  # fmt: skip
    job = harness.median(walls[1:])  # the warm-up's job built and traced
    report.figure(
        "style_transfer_job_s", job, "s", runs=walls[1:], iterations=args.iterations,
        what="a whole warm job: claim, set-up, the loop, snapshot, final image, success",
    )  # fmt: skip


def lbfgs_against_sgd(
    args: argparse.Namespace,
    runtime: harness.LocalRuntime,
    pictures: dict[str, str],
    report: harness.Report,
) -> None:
    common = {**pictures, "height": args.height, "backbone_weights": "none",
              "snapshot_every": 10**6, "iterations": args.sgd_iterations}  # fmt: skip
    for optimizer in ("sgd", "lbfgs"):  # build and trace both
        runtime.run("style-transfer", {**common, "iterations": 1, "optimizer": optimizer})
    print(f"2. L-BFGS against the reference's SGD, height {args.height} (random VGG19 weights)")
    for style_weight in args.style_weights:
        sgd = runtime.run("style-transfer", {**common, "style_weight": style_weight}).ctx
        losses = [call.metrics["loss"] for call in sgd.reports]
        lbfgs = runtime.run(
            "style-transfer", {**common, "style_weight": style_weight, "optimizer": "lbfgs"}
        ).ctx
        done = [i for i, call in enumerate(lbfgs.reports) if call.metrics["loss"] <= losses[-1]]
        sgd_seconds = loop_seconds(sgd)
        if done:  # L-BFGS reached SGD's last loss at its iteration done[0] + 1
            seconds = loop_seconds(lbfgs, done[0] + 1)
            reached = {
                "lbfgs_seconds": seconds,
                "lbfgs_iterations": done[0] + 1,
                "lbfgs_evaluations": int(lbfgs.reports[done[0]].metrics["evaluations"]),
            }
        else:
            seconds = math.nan  # not within as many iterations as SGD ran
            reached = {"lbfgs_final_loss": lbfgs.reports[-1].metrics["loss"]}
        report.figure(
            f"lbfgs_time_ratio_style_weight_{style_weight:g}", seconds / sgd_seconds, "x",
            baseline=f"SGD, {args.sgd_iterations} iterations (s)", baseline_value=sgd_seconds,
            style_weight=style_weight, sgd_loss_first=losses[0], sgd_loss_last=losses[-1],
            what="time for L-BFGS to reach the loss SGD reaches in its iterations", **reached,
        )  # fmt: skip


def starts(args: argparse.Namespace, folder: Path, report: harness.Report) -> None:
    style_pictures = make_pictures(folder / "start", 32)
    dream_image = make_pictures(folder / "dream", 120)["content"]  # 160x120
    cases = [
        bench_warm_start.Case(
            "style-transfer",
            {**style_pictures, "height": 32, "iterations": 3, "backbone_weights": "none"},
            warm_changes={"seed": 1},
        ),
        bench_warm_start.Case(
            "deepdream",
            {"image": dream_image, "octaves": 1, "steps": 3, "max_loss": None,
             "backbone_weights": "none"},
            warm_changes={"seed": 1},
        ),
    ]  # fmt: skip
    print("3. cold against warm job start, one-worker stack (bench_warm_start)")
    bench_warm_start.measure(cases, args.start_repeats, report)


def main() -> None:
    parser = harness.parser(__doc__, repeats=3)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15, help="per throughput repeat")
    parser.add_argument("--sgd-iterations", type=int, default=200)
    parser.add_argument(
        "--style-weights", type=float, nargs="*", default=[1e-6, 1e-3],
        help="L-BFGS runs: the reference's 1e-6 (random weights: total variation dominates) "
        "and 1e-3 (the style term dominates)",
    )  # fmt: skip
    parser.add_argument("--start-repeats", type=int, default=2)
    parser.add_argument(
        "--parts", nargs="*", default=["throughput", "lbfgs", "starts"],
        choices=["throughput", "lbfgs", "starts"],
    )  # fmt: skip
    quick: dict[str, Any] = {"repeats": 1, "height": 32, "iterations": 3, "sgd_iterations": 5,
                             "style_weights": [1e-3], "start_repeats": 1}  # fmt: skip
    args = harness.parse(parser, quick)
    report = harness.Report("render", args)
    with harness.LocalRuntime("atelier-bench-render-") as runtime:
        pictures = make_pictures(runtime.home / "pictures", args.height)
        if "throughput" in args.parts:
            throughput(args, runtime, pictures, report)
        if "lbfgs" in args.parts:
            lbfgs_against_sgd(args, runtime, pictures, report)
        if "starts" in args.parts:
            starts(args, runtime.home, report)


if __name__ == "__main__":
    main()
