"""Cold against warm job start on one worker: the first job of a kind and shape on a fresh
worker process against the second one, which finds the built models in the process cache.

    python bench/bench_warm_start.py [--repeats 3] [--kinds dcgan] [--quick] [--json FILE]

Each repeat starts a fresh real stack (`atelier up --workers 1` in a temporary
ATELIER_HOME, Atelier's default timings) per kind, runs two jobs of the same kind and
shape one after the other, and stops the stack; so every cold job is the first job of a
new worker process, and the kinds alternate (order reversed every repeat). The start
time of a job is read from its own events, as written by the worker: from `started`
(written at claim) to the first `progress` event (the first progress report of a job
always becomes an event: the runtime's event throttle starts at zero). For dcgan that is
one training step, plus for the cold job the model build and the trace of the train step
(the worker's pool process imports TensorFlow before it takes a job, so no job pays for
that). The `model_cache` event each job writes at the end shows whether it built the
models or reused them. bench_render.py runs the same for style-transfer and deepdream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import harness

from scheduler.client import Client


@dataclass(frozen=True)
class Case:
    """One kind at one shape: the first job runs `spec`, the second `spec | warm_changes`
    (a change that must not matter to the cache, e.g. the seed)."""

    kind: str
    spec: dict[str, Any]
    warm_changes: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case(
        "dcgan",
        {"image_size": 28, "batch_size": 8, "epochs": 1, "steps_per_epoch": 5, "samples": 4},
        warm_changes={"seed": 1},
    ),
]


@dataclass(frozen=True)
class JobStart:
    seconds: float  # started -> first progress
    queued_seconds: float  # submitted -> started
    cache_hits: int
    cache_builds: int
    pid: int | None


def job_start(client: Client, job_id: str) -> JobStart:
    events = client.events(job_id)
    started = harness.event_times(events, "started")[-1]
    first_progress = next(t for t in harness.event_times(events, "progress") if t >= started)
    submitted = harness.event_times(events, "submitted")[0]
    cache = next((e for e in events if e["type"] == "model_cache"), {})
    return JobStart(
        seconds=(first_progress - started).total_seconds(),
        queued_seconds=(started - submitted).total_seconds(),
        cache_hits=cache.get("hits", 0),
        cache_builds=cache.get("builds", 0),
        pid=cache.get("pid"),
    )


def cold_and_warm(case: Case) -> tuple[JobStart, JobStart]:
    """Two jobs of `case` on a fresh one-worker stack: the first cold, the second warm."""
    with harness.stack(workers=1) as stack:
        cold = harness.run_on_stack(stack, case.kind, case.spec)
        warm = harness.run_on_stack(stack, case.kind, {**case.spec, **case.warm_changes})
        return job_start(stack.client, cold), job_start(stack.client, warm)


def describe(pair: tuple[JobStart, JobStart]) -> str:
    cold, warm = pair
    return (
        f"cold {cold.seconds:.2f} s (builds {cold.cache_builds}), warm {warm.seconds:.2f} s "
        f"(hits {warm.cache_hits}, builds {warm.cache_builds}); submit->started "
        f"{cold.queued_seconds:.2f} / {warm.queued_seconds:.2f} s"
    )


def measure(cases: list[Case], repeats: int, report: harness.Report) -> None:
    """Cold and warm starts of every case, repeated, and their figures."""
    arms = {case.kind: partial(cold_and_warm, case) for case in cases}
    results = harness.interleave(arms, repeats, warmup=False, describe=describe)
    for case in cases:
        cold = [c.seconds for c, _ in results[case.kind]]
        warm = [w.seconds for _, w in results[case.kind]]
        reused = all(w.cache_hits > 0 and w.cache_builds == 0 for _, w in results[case.kind])
        same_process = all(c.pid == w.pid for c, w in results[case.kind])
        spec = {k: v for k, v in case.spec.items() if not (isinstance(v, str) and "/" in v)}
        shape = {"spec": spec, "second_job": case.warm_changes}  # without file paths
        name = case.kind.replace("-", "_")
        report.figure(
            f"{name}_start_warm_s", harness.median(warm), "s", baseline="cold start",
            baseline_value=harness.median(cold), runs=warm, cold_runs=cold,
            warm_reused_cache=reused, same_process=same_process, **shape,
        )  # fmt: skip
        report.ratio(
            f"{name}_start_speedup", cold, warm, arm="cold start", baseline="warm start",
            what="cold / warm: how many times faster the warm job starts", **shape,
        )  # fmt: skip


def main() -> None:
    parser = harness.parser(__doc__, repeats=3)
    parser.add_argument("--kinds", nargs="*", default=[case.kind for case in CASES])
    args = harness.parse(parser, quick={"repeats": 1})
    cases = [case for case in CASES if case.kind in args.kinds]
    measure(cases, args.repeats, harness.Report("warm_start", args))


if __name__ == "__main__":
    main()
