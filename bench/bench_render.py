"""Render kinds: style transfer's fast path against the reference loop, L-BFGS against
SGD, and cold against warm job starts of style-transfer and deepdream.

    python bench/bench_render.py [--height 64] [--iterations 15] [--repeats 3]
                                 [--sgd-iterations 200] [--style-weights 1e-6 1e-3]
                                 [--start-repeats 2] [--parts throughput lbfgs starts]

1. throughput: iterations/s of a warm style-transfer job run in-process through the kind
   (`run(spec, ctx)`: targets computed once, one image through VGG19 per step), timed
   from the start of its loop to its last progress report, against the reference's loop
   (content, style and generated image through VGG19 at every step, Keras SGD with
   ExponentialDecay, compiled) on the same VGG19 object, at the same size. Interleaved
   repeats, medians.
2. lbfgs: SGD runs `--sgd-iterations` iterations (the reference runs 4000: reduced so the
   benchmark takes minutes on a CPU); then L-BFGS runs until its loss is at most SGD's loss
   at its last iteration. Once with the reference's style weight, once with 1000 times it
   (with random weights the total-variation term otherwise dominates). Times from the start
   of each job's loop (warm, in-process; the L-BFGS time includes its first evaluation at
   the content image).
3. starts: cold against warm job start of both kinds through a real one-worker stack, by
   bench/bench_warm_start.py (started -> first progress, from the job's events).

The backbones have random weights (`backbone_weights: none`; no ImageNet download here):
the cost per step is the same as with ImageNet weights, the loss landscape is not (with
random weights the total-variation term dominates the style-transfer loss).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tests.fixtures.local_context import DictCache, LocalContext  # noqa: E402

ASPECT = 4 / 3  # width / height of the synthetic content image


class TimedContext(LocalContext):
    """LocalContext that remembers when the loop started (the kind's `restore` call, after
    its set-up) and when each progress report came."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = 0.0
        self.times: list[float] = []

    def restore(self) -> Any:
        self.started = time.perf_counter()
        return super().restore()

    def progress(
        self,
        step: int,
        total: int,
        *,
        epoch: int | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        self.times.append(time.perf_counter())
        super().progress(step, total, epoch=epoch, metrics=metrics)


def make_pictures(folder: Path, height: int) -> dict[str, str]:
    """A smooth landscape-like content image and a striped style image."""
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


def timed_run(spec: Any, cache: DictCache, root: Path) -> TimedContext:
    from kinds.style_transfer import run

    ctx = TimedContext(root / f"job-{time.perf_counter_ns()}", cache=cache, checkpoint_every=10**9)
    run(spec, ctx)
    return ctx


def throughput(args: argparse.Namespace, pictures: dict[str, str], root: Path) -> None:
    from kinds.images import load_rgb, vgg_preprocess
    from kinds.style_transfer import Spec
    from kinds.style_transfer.reference import ReferenceStyleTransfer

    spec = Spec(
        **pictures,
        height=args.height,
        iterations=args.iterations,
        snapshot_every=args.iterations,
        backbone_weights="none",
    )
    height, width = spec.size
    cache = DictCache()
    timed_run(spec, cache, root)  # cold: build and trace
    extractor = next(e for k, e in cache.entries.items() if k[0] == "backbone")
    reference = ReferenceStyleTransfer(extractor.backbone, height, width)
    content = vgg_preprocess(load_rgb(spec.content, (height, width)))[np.newaxis]
    style = vgg_preprocess(load_rgb(spec.style, (height, width)))[np.newaxis]
    reference.run(content, style, 2)  # trace

    kind_rates, reference_rates, job_seconds = [], [], []
    for _ in range(args.repeats):
        began = time.perf_counter()
        ctx = timed_run(spec, cache, root)
        job_seconds.append(time.perf_counter() - began)
        kind_rates.append(len(ctx.times) / (ctx.times[-1] - ctx.started))
        began = time.perf_counter()
        reference.run(content, style, args.iterations)
        reference_rates.append(args.iterations / (time.perf_counter() - began))
    kind, ref = statistics.median(kind_rates), statistics.median(reference_rates)
    print(f"1. style transfer at {width}x{height}, VGG19 (random weights), CPU")
    print(f"   through the kind (warm job)   {kind:7.2f} it/s   {_list(kind_rates)}")
    print(f"   reference loop (3 images)     {ref:7.2f} it/s   {_list(reference_rates)}")
    print(f"   speed-up                      {kind / ref:7.2f}x  (median of {args.repeats})")
    per_job = statistics.median(job_seconds)
    print(
        f"   whole warm job of {args.iterations} iterations {per_job:.2f} s "
        f"({args.iterations / per_job:.2f} it/s with set-up, snapshot and final image)"
    )


def lbfgs_against_sgd(args: argparse.Namespace, pictures: dict[str, str], root: Path) -> None:
    from kinds.style_transfer import Spec

    common = dict(**pictures, height=args.height, backbone_weights="none", snapshot_every=10**6)
    cache = DictCache()
    timed_run(Spec(**common, iterations=1), cache, root)  # build and trace, both optimisers
    timed_run(Spec(**common, iterations=1, optimizer="lbfgs"), cache, root)
    height, width = Spec(**common).size
    print(f"2. L-BFGS against the reference's SGD at {width}x{height} (random VGG19 weights)")
    for style_weight in args.style_weights:
        sgd = Spec(**common, iterations=args.sgd_iterations, style_weight=style_weight)
        sgd_ctx = timed_run(sgd, cache, root)
        sgd_losses = [call.metrics["loss"] for call in sgd_ctx.progress_calls]
        target = sgd_losses[-1]
        sgd_seconds = sgd_ctx.times[-1] - sgd_ctx.started
        lbfgs = Spec(
            **common, iterations=args.sgd_iterations, style_weight=style_weight, optimizer="lbfgs"
        )
        lbfgs_ctx = timed_run(lbfgs, cache, root)
        calls = lbfgs_ctx.progress_calls
        reached = next((i for i, c in enumerate(calls) if c.metrics["loss"] <= target), None)
        print(
            f"   style_weight {style_weight:g}: SGD {args.sgd_iterations} iterations (the "
            f"reference runs 4000), loss {sgd_losses[0]:.4g} -> {target:.4g} in {sgd_seconds:.1f} s"
        )
        if reached is None:
            final = calls[-1].metrics["loss"]
            print(f"     L-BFGS did not reach it in {len(calls)} iterations (loss {final:.4g})")
            continue
        call = calls[reached]
        lbfgs_seconds = lbfgs_ctx.times[reached] - lbfgs_ctx.started
        evaluations = int(call.metrics["evaluations"])
        print(
            f"     L-BFGS reached {call.metrics['loss']:.4g} at iteration {reached + 1} "
            f"({evaluations} loss evaluations) in {lbfgs_seconds:.1f} s: time ratio "
            f"L-BFGS / SGD {lbfgs_seconds / sgd_seconds:.3f}, evaluations {evaluations} vs "
            f"{args.sgd_iterations}"
        )


def starts(args: argparse.Namespace, folder: Path) -> None:
    try:
        from bench.bench_warm_start import Case, cold_and_warm, report
    except ImportError as error:
        print(f"3. skipped: bench/bench_warm_start.py is not usable here ({error})")
        return
    (folder / "start").mkdir()
    (folder / "dream").mkdir()
    style_pictures = make_pictures(folder / "start", 32)
    dream_image = make_pictures(folder / "dream", 120)["content"]  # 160x120
    cases = [
        Case(
            "style-transfer",
            {**style_pictures, "height": 32, "iterations": 3, "backbone_weights": "none"},
            warm_changes={"seed": 1},
        ),
        Case(
            "deepdream",
            {
                "image": dream_image,
                "octaves": 1,
                "steps": 3,
                "max_loss": None,
                "backbone_weights": "none",
            },
            warm_changes={"seed": 1},
        ),
    ]
    results: dict[str, list[Any]] = {case.kind: [] for case in cases}
    for _ in range(args.start_repeats):
        for case in cases:
            results[case.kind].append(cold_and_warm(case))
    print("3. cold against warm job start, one-worker embedded stack (bench_warm_start)")
    for case in cases:
        report(case, results[case.kind])


def _list(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in values) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=15, help="per throughput repeat")
    parser.add_argument("--repeats", type=int, default=3)
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
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="atelier-render-") as directory:
        folder = Path(directory)
        pictures = make_pictures(folder, args.height)
        if "throughput" in args.parts:
            throughput(args, pictures, folder)
        if "lbfgs" in args.parts:
            lbfgs_against_sgd(args, pictures, folder)
        if "starts" in args.parts:
            starts(args, folder)
    print(f"({time.perf_counter() - began:.0f} s in all; load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
