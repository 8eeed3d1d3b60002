"""The benchmarks' harness: every script in bench/ measures through it.

- `parser` / `parse`: the flags every script shares (--repeats, --quick, --json FILE).
- `LocalRuntime.run`: a job run in this process by the worker's own `execute` (claim,
  lease heartbeat, the real RunContext, recorded outcome) on a temporary SQLite database,
  with `TimedContext` as its context: the RunContext unchanged plus clocks (step
  boundaries, progress reports, outputs by role, checkpoint saves).
- `FitClock`: the same clocks for a plain Keras `model.fit` (`Window`: the same window).
- `interleave`: arms repeated, the order reversed every repeat, after a warm-up.
- `Report`: each figure as a readable line and one `BENCH {json}` line (`--json FILE`
  appends them to FILE); ratios as the ratio of medians and the median of paired ratios.
- `stack`: a real `atelier up` (tests/fixtures/stacks.py) with Atelier's default timings.

Run the scripts as files (`python bench/bench_dcgan.py`): they import this module as
`harness`, which puts the repository on sys.path for `bench` and `tests`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # bench/ and tests/ are not installed packages
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from core.inputs import store_inputs  # noqa: E402
from core.settings import Settings, load_settings  # noqa: E402
from core.storage import open_storage  # noqa: E402
from db import jobs  # noqa: E402
from db.engine import session_factory  # noqa: E402
from db.migrate import ensure_current  # noqa: E402
from db.models import Job  # noqa: E402
from kinds.contract import Checkpoint, OutputData, Submission  # noqa: E402
from scheduler.specs import validate_spec  # noqa: E402
from tests.fixtures.stacks import Stack, make_stack  # noqa: E402
from worker.model_cache import PROCESS_CACHE  # noqa: E402
from worker.run_context import RunContext  # noqa: E402
from worker.runtime import execute  # noqa: E402

T = TypeVar("T")
JSON_PREFIX = "BENCH "
STACK_JOB_TIMEOUT_SECONDS = 1800.0

# --- flags and figures -------------------------------------------------------------------


def parser(doc: str, *, repeats: int) -> argparse.ArgumentParser:
    """The flags every script has (a script adds its sizes); --help shows `doc`."""
    summary, _, details = doc.partition("\n\n")
    result = argparse.ArgumentParser(
        description=summary, epilog=details, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    result.add_argument("--repeats", type=int, default=repeats, help="of every arm, interleaved")
    result.add_argument("--quick", action="store_true", help="tiny sizes: proves the script runs")
    result.add_argument("--json", type=Path, metavar="FILE", help="append the JSON lines to FILE")
    return result


def parse(parser: argparse.ArgumentParser, quick: Mapping[str, Any]) -> argparse.Namespace:
    """Parsed flags; with --quick, `quick` replaces the defaults the command line kept."""
    args = parser.parse_args()
    for name, value in quick.items() if args.quick else ():
        if getattr(args, name) == parser.get_default(name):
            setattr(args, name, value)
    return args


def load_average() -> str:
    """Other processes' load moves wall-clock figures; CPU-time figures much less."""
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def git_commit() -> str | None:
    command = ["git", "rev-parse", "--short", "HEAD"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    return result.stdout.strip() or None


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], percent: int) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    return [_rounded(item) for item in value] if isinstance(value, list | tuple) else value


class Report:
    """Prints each figure as a readable line and one JSON line `BENCH {...}`: bench,
    figure, value, unit, then the fields given (baseline, baseline_value, target, runs,
    ...; None left out), the repeats, --quick, the commit and the time."""

    def __init__(self, bench: str, args: argparse.Namespace) -> None:
        self.bench, self.path = bench, args.json
        self.common = {"repeats": args.repeats, "quick": args.quick, "commit": git_commit()}

    def figure(self, figure: str, value: float, unit: str, **fields: Any) -> None:
        record = {"bench": self.bench, "figure": figure, "value": value, "unit": unit}
        record |= {key: item for key, item in fields.items() if item is not None}
        record |= self.common | {"at": datetime.now(UTC).isoformat(timespec="seconds")}
        record = {key: _rounded(item) for key, item in record.items()}
        line = json.dumps(record)
        print(f"{_readable(record)}\n{JSON_PREFIX}{line}", flush=True)
        if self.path is not None:
            with self.path.open("a") as file:
                file.write(line + "\n")

    def ratio(
        self, figure: str, values: Sequence[float], baseline_values: Sequence[float], *,
        arm: str, baseline: str, **fields: Any,
    ) -> None:  # fmt: skip
        """median(values) / median(baseline_values); with as many values as baseline
        values (paired by repeat) also the median of the per-repeat ratios."""
        mine, theirs = median(values), median(baseline_values)
        if len(values) == len(baseline_values):
            paired = [a / b for a, b in zip(values, baseline_values, strict=True)]
            fields |= {"paired": median(paired), "runs": paired}
        self.figure(
            figure, mine / theirs, "x", arm=arm, arm_value=mine, baseline=baseline,
            baseline_value=theirs, **fields,
        )  # fmt: skip


def _readable(record: dict[str, Any]) -> str:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4g}"

    parts = [f"{record['arm']} {number(record['arm_value'])}"] if "arm" in record else []
    if "baseline" in record:
        parts.append(f"vs {record['baseline']} {number(record.get('baseline_value'))}")
    if "paired" in record:
        parts.append(f"median of paired ratios {number(record['paired'])}")
    if "runs" in record:
        parts.append("runs " + ", ".join(number(value) for value in record["runs"]))
    if "target" in record:
        parts.append(f"target {record['target']}")
    details = f" ({'; '.join(parts)})" if parts else ""
    return f"  {record['figure']:<36} {number(record['value']):>9} {record['unit']:<7}{details}"


# --- interleaved repeats -----------------------------------------------------------------


def interleave(
    arms: Mapping[str, Callable[[], T]],
    repeats: int,
    *,
    warmup: bool | Mapping[str, Callable[[], object]] = True,
    describe: Callable[[T], str] = str,
) -> dict[str, list[T]]:
    """Each arm's results over `repeats` repeats, the order reversed every other repeat
    (A B, B A, ...). `warmup`: True runs every arm once untimed first; a mapping runs
    those instead."""
    warmups = (arms if warmup else {}) if isinstance(warmup, bool) else warmup
    for name, run in warmups.items():
        print(f"  warm-up {name}", flush=True)
        run()
    results: dict[str, list[T]] = {name: [] for name in arms}
    names = list(arms)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            results[name].append(arms[name]())
            shown = describe(results[name][-1])
            print(f"  repeat {repeat + 1} {name:<10} {shown}; load {load_average()}", flush=True)
    return results


# --- clocks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    wall: float  # time.perf_counter
    cpu: float  # time.process_time: CPU time of every thread of this process

    @classmethod
    def now(cls) -> Stamp:
        return cls(time.perf_counter(), time.process_time())


@dataclass(frozen=True)
class Window:
    """A training run: its start (data loaded, models built) and the ends of its first
    and last steps. Step 1 holds the trace of the train step, so the steady figures
    leave it out: they compare training, not tracing."""

    steps: int
    loop_start: float
    first: Stamp
    last: Stamp

    @property
    def steady_rate(self) -> float:
        """Steps per second over steps 2..N."""
        return (self.steps - 1) / (self.last.wall - self.first.wall)

    @property
    def loop_rate(self) -> float:
        """Steps per second including step 1 (its trace)."""
        return self.steps / (self.last.wall - self.loop_start)

    @property
    def cpu_rate(self) -> float:
        """Steps per CPU second (all threads of this process) over steps 2..N."""
        return (self.steps - 1) / (self.last.cpu - self.first.cpu)


def rate(times: Sequence[float], steps: float | None = None) -> float:
    """`steps` (default: one per interval) per second from the first time to the last."""
    return (len(times) - 1 if steps is None else steps) / (times[-1] - times[0])


class FitClock:
    """Clocks for `model.fit(..., callbacks=[clock.callback()])`: the start of training,
    the end of step 1 (the start of step 2) and the end of every epoch. Only batch
    *begin* is hooked: a batch-end hook makes Keras give up its asynchronous dispatch."""

    def __init__(self) -> None:
        self.loop_start = math.nan
        self.first: Stamp | None = None
        self.epoch_ends: list[float] = []

    def callback(self) -> Any:
        import keras

        return keras.callbacks.LambdaCallback(
            on_train_begin=self._begin,
            on_train_batch_begin=self._batch,
            on_epoch_end=lambda epoch, logs: self.epoch_ends.append(time.perf_counter()),
        )

    def _begin(self, logs: Any) -> None:
        self.loop_start = time.perf_counter()

    def _batch(self, batch: int, logs: Any) -> None:
        if batch == 1 and self.first is None:
            self.first = Stamp.now()

    def window(self, steps: int) -> Window:
        """Call as soon as `fit` returns: that is the end of the last step."""
        assert self.first is not None, "fit ran fewer than two steps in its first epoch"
        return Window(steps, self.loop_start, self.first, Stamp.now())


@dataclass(frozen=True)
class Reported:
    at: float  # when the progress report returned
    metrics: dict[str, float]


@dataclass(frozen=True)
class Saved:
    role: str
    name: str
    path: Path
    end: float  # when save_output returned: written, hashed, recorded


class TimedContext(RunContext):
    """The runtime's context, unchanged, with clocks around what a kind calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.created = time.perf_counter()  # right after the claim
        self.restored = math.nan  # the kind's `restore` call: set-up done, the loop starts
        self.steps: list[Stamp] = []  # the end of each step's boundary
        self.reports: list[Reported] = []
        self.saved: list[Saved] = []
        self.checkpoint_saves: list[float] = []  # seconds: snapshot, write, fsync, record
        self.checkpoint_bytes = 0
        # inside progress() and metrics(); epoch_end: from metrics() to the next boundary
        # (a training kind's epoch end: the metrics event, the sample)
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._snapshot_seconds = 0.0
        self._metrics_began: float | None = None

    def restore(self) -> Checkpoint | None:
        self.restored = time.perf_counter()
        return super().restore()

    def boundary(self, step: int, snapshot: Callable[[], Checkpoint]) -> None:
        def timed() -> Checkpoint:
            began = time.perf_counter()
            checkpoint = snapshot()
            self._snapshot_seconds = time.perf_counter() - began
            return checkpoint

        if self._metrics_began is not None:
            self.seconds["epoch_end"] += time.perf_counter() - self._metrics_began
            self._metrics_began = None
        super().boundary(step, timed)
        self.steps.append(Stamp.now())

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        began = time.perf_counter()
        super().save_checkpoint(checkpoint)
        self.checkpoint_saves.append(time.perf_counter() - began + self._snapshot_seconds)
        latest = self.checkpoints.saved()[0]  # this run's newest
        self.checkpoint_bytes = self.store.local_path(latest).stat().st_size

    def progress(self, step: int, total: int, **kwargs: Any) -> None:
        began = time.perf_counter()
        super().progress(step, total, **kwargs)
        end = time.perf_counter()
        self.seconds["progress"] += end - began
        metrics = {name: float(value) for name, value in (kwargs.get("metrics") or {}).items()}
        self.reports.append(Reported(end, metrics))

    def metrics(self, values: Mapping[str, float], **kwargs: Any) -> None:
        began = self._metrics_began = time.perf_counter()
        super().metrics(values, **kwargs)
        self.seconds["metrics"] += time.perf_counter() - began

    def save_output(self, role: str, name: str, data: OutputData, **kwargs: Any) -> Path:
        path = super().save_output(role, name, data, **kwargs)
        self.saved.append(Saved(role, name, path, time.perf_counter()))
        return path

    def window(self) -> Window:
        """From the `restore` call over the step boundaries."""
        return Window(len(self.steps), self.restored, self.steps[0], self.steps[-1])

    def saved_at(self, role: str) -> list[float]:
        return [saved.end for saved in self.saved if saved.role == role]


# --- jobs in this process, through the worker runtime ------------------------------------


@dataclass(frozen=True)
class Run:
    job_id: str
    ctx: TimedContext
    began: float  # time.perf_counter before `execute`
    wall: float  # `execute`: from the claim to the recorded success


def report_checkpoints(
    report: Report, runs: list[Run], every: int, also_at: Sequence[int] = ()
) -> None:
    """What checkpointing costs the runs (each saved every `every` steps): a save's time
    and size, its share of the job's wall time, and its share of one interval at the
    steady step rate, at `every` and at each of `also_at` (what a long job pays)."""
    if not all(run.ctx.checkpoint_saves for run in runs):
        print(f"  no checkpoint: a run of {len(runs[0].ctx.steps)} steps is shorter than {every}")
        return
    saves = [median(run.ctx.checkpoint_saves) for run in runs]
    shares = [sum(run.ctx.checkpoint_saves) / run.wall * 100 for run in runs]
    size = runs[0].ctx.checkpoint_bytes / 1e6
    saves_ms = [save * 1000 for save in saves]
    report.figure("checkpoint_save_ms", median(saves_ms), "ms", runs=saves_ms, mb=size)
    report.figure("checkpoint_mb", size, "MB", what="the checkpoint file (.npz)")
    report.figure(
        "checkpoint_share", median(shares), "%", target="< 3 %", runs=shares,
        what="time in checkpoint saves / the job's wall time", checkpoint_every=every,
    )  # fmt: skip
    for interval in sorted({every, *also_at}):
        between = [interval / run.ctx.window().steady_rate for run in runs]
        shares = [save / (save + steps) * 100 for save, steps in zip(saves, between, strict=True)]
        suffix = "" if interval == every else f"_at_{interval}"
        report.figure(
            f"checkpoint_interval_share{suffix}", median(shares), "%", target="< 3 %",
            what=f"save / (save + {interval} steps at the steady rate): what a long job pays",
        )  # fmt: skip


class LocalRuntime:
    """A temporary ATELIER_HOME with its own SQLite database and no broker (nothing
    dispatches: jobs are created queued and run here, as a worker process runs them)."""

    def __init__(self, prefix: str = "atelier-bench-") -> None:
        self.home = Path(tempfile.mkdtemp(prefix=prefix))
        self.settings: Settings = load_settings({"ATELIER_HOME": str(self.home)})
        ensure_current(self.settings.database_url)
        self.sessions = session_factory(self.settings.database_url)

    def __enter__(self) -> LocalRuntime:
        return self

    def __exit__(self, *_: object) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def submit(self, kind: str, spec: Mapping[str, Any]) -> str:
        """A queued job: the spec validated and its input files stored, as at submit."""
        valid = validate_spec(kind, dict(spec), Submission(outputs_of=lambda reference, role: None))
        values = store_inputs(valid.values, valid.input_files, open_storage(self.settings))
        with self.sessions.begin() as session:
            job_id = jobs.create_job(session, kind=kind, spec=values, queue=valid.queue).id
            jobs.mark_queued(session, job_id)
        return job_id

    def run(
        self,
        kind: str,
        spec: Mapping[str, Any],
        *,
        context: type[TimedContext] = TimedContext,
        cold: bool = False,
        keep_outputs: bool = False,
    ) -> Run:
        """Submit a job and run it to success with `context`. `cold` empties the process
        model cache first (build and trace, as a fresh worker); outputs are deleted
        afterwards (checkpoints are large) unless `keep_outputs`."""
        job_id = self.submit(kind, spec)
        if cold:
            PROCESS_CACHE.clear()
        made: list[TimedContext] = []

        def make(*args: Any) -> TimedContext:
            made.append(context(*args))
            return made[-1]

        began = time.perf_counter()
        outcome = execute(job_id, kind, "bench@local", self.settings, context=make)
        wall = time.perf_counter() - began
        ctx = made[0] if made else None
        if outcome != "succeeded" or ctx is None:
            with self.sessions() as session:
                error = session.get(Job, job_id).error_message  # type: ignore[union-attr]
            raise RuntimeError(f"{kind} job {job_id} ended {outcome}: {error}")
        if not keep_outputs:
            shutil.rmtree(self.settings.outputs_dir / job_id, ignore_errors=True)
        return Run(job_id, ctx, began, wall)


# --- real stacks -------------------------------------------------------------------------


@contextmanager
def stack(workers: int = 1, *, kinds: str | None = None) -> Iterator[Stack]:
    """`atelier up --workers N` (tests/fixtures/stacks.py) in a temporary ATELIER_HOME,
    with Atelier's default lease and retry timings rather than the tests' short ones.
    `kinds` (ATELIER_EXTRA_KINDS) is set in the stack and in this process, whose client
    validates the specs. The home is removed afterwards unless something failed."""
    home = Path(tempfile.mkdtemp(prefix="atelier-bench-stack-"))
    defaults = {"ATELIER_LEASE_SECONDS": None, "ATELIER_RETRY_BACKOFF_SECONDS": None}
    changes = {**defaults, "ATELIER_EXTRA_KINDS": kinds}
    running, cleanup = make_stack("embedded", home, workers, env_changes=changes)
    if kinds:
        os.environ["ATELIER_EXTRA_KINDS"] = kinds
    try:
        try:
            running.start()
            yield running
        finally:
            running.stop()
            cleanup()
    except BaseException:
        print(f"stack log kept: {running.log_path}", file=sys.stderr)
        raise
    shutil.rmtree(home, ignore_errors=True)


def run_on_stack(
    running: Stack, kind: str, spec: Mapping[str, Any], timeout: float = STACK_JOB_TIMEOUT_SECONDS
) -> str:
    """Submit a job to the stack and wait until it succeeded; its id."""
    job_id = running.client.submit(kind, dict(spec))
    view = running.wait(job_id, timeout=timeout)
    if view.status != "succeeded":
        raise RuntimeError(f"{kind} job {job_id} {view.status}: {view.error_message}")
    return job_id


def event_times(events: list[dict[str, Any]], type_: str) -> list[datetime]:
    """When the job's events of `type_` were written, in order."""
    return [datetime.fromisoformat(event["at"]) for event in events if event["type"] == type_]
