"""The kind contract, for every case of tests/fixtures/kind_cases.py, in process through
LocalContext (the worker's checkpoint store, no database or Celery):

- a run stopped at an epoch's end and in the middle of one, and resumed each time with a
  fresh cache (another worker process), ends with the bytes, progress and metrics of an
  uninterrupted cold run;
- a run that crashes between checkpoints resumes from the last one, exactly;
- a warm cache serves a second job without building or tracing again, and resets
  everything between jobs: a job after one of another seed, other hyperparameters and
  op determinism off computes exactly what the cold run did;
- a non-finite loss fails the job at once, with a one-line message, not retried;
- importing the kind does not load TensorFlow (the CLI imports it to validate specs);
- bad specs are refused, as the worker and `atelier submit` read them (JSON) and in
  Python.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytest

from kinds import kind_modules
from kinds.contract import JobError
from tests.fixtures.kind_cases import (
    CASES,
    RESUMABLE,
    KindCase,
    KindRuns,
    assert_parts_make_the_reference,
    output_files,
    run_in_parts,
)
from tests.fixtures.local_context import DictCache, LocalContext, SimulatedCrash
from tests.fixtures.stacks import REPO

HELPER_MODULES = (
    "kinds.datasets",
    "kinds.images",
    "kinds.training",
    "kinds.sampling",
    "kinds.text_corpus",
    "kinds.backbones",
)
"""Modules the kinds' specs use at submit time: as light as the kinds."""


@pytest.fixture(scope="module", params=RESUMABLE, ids=str)
def case(request: pytest.FixtureRequest) -> KindCase:
    return request.param


@pytest.fixture(scope="module")
def reference(case: KindCase, kind_runs: KindRuns) -> LocalContext:
    """The case's uninterrupted cold run (shared with the kind's own test module)."""
    return kind_runs.reference(case)


@dataclass(frozen=True)
class Warm:
    """A cache after two jobs: one of another seed and hyperparameters, then the case's."""

    cache: DictCache
    run: LocalContext
    """The second job."""
    builds: dict[Any, int]
    jobs: dict[Any, int]
    traces: dict[Any, dict[str, int]]
    problem: AssertionError | None
    """What the case's own check of the entries found right after the second job."""


def traces_of(entry: Any) -> dict[str, int] | None:
    if hasattr(entry, "tracing_counts"):
        return dict(entry.tracing_counts)
    if hasattr(entry, "tracing_count"):
        return {"step": entry.tracing_count}
    return None


@pytest.fixture(scope="module")
def warm(case: KindCase, kind_runs: KindRuns, tmp_path_factory: pytest.TempPathFactory) -> Warm:
    """The two jobs, and the counts taken right after them: the cache then serves the
    tests below as a warm worker's (each job starts with a reset)."""
    assert case.resume is not None
    assert case.resume.other.get("deterministic") is False and "seed" in case.resume.other
    root, cache = tmp_path_factory.mktemp(f"warm-{case.name}"), DictCache()
    case.run(
        case.spec(kind_runs.inputs, **case.resume.other), LocalContext(root / "a", cache=cache)
    )
    spec = case.spec(kind_runs.inputs)
    second = case.run(spec, LocalContext(root / "b", cache=cache))
    problem = None
    if case.resume.check_warm is not None:
        try:
            case.resume.check_warm(cache, spec)
        except AssertionError as error:
            problem = error
    entries = cache.entries.items()
    return Warm(
        cache=cache,
        run=second,
        builds=dict(cache.builds),
        jobs={key: entry.jobs for key, entry in entries if hasattr(entry, "jobs")},
        traces={key: t for key, entry in entries if (t := traces_of(entry)) is not None},
        problem=problem,
    )


def test_run_stopped_twice_resumes_in_fresh_caches_to_identical_bytes(
    case: KindCase, reference: LocalContext, warm: Warm, kind_runs: KindRuns, tmp_path: Path
) -> None:
    """Stopped at an epoch's end and in the middle of one (in either order), each time
    resumed by another worker process."""
    assert case.resume is not None
    stops = sorted(case.resume.stop_at)
    parts = run_in_parts(case, case.spec(kind_runs.inputs), tmp_path, stops, cache=warm.cache)
    assert_parts_make_the_reference(parts, stops, reference)


def test_crashed_run_resumes_from_its_last_checkpoint(
    case: KindCase, reference: LocalContext, warm: Warm, kind_runs: KindRuns, tmp_path: Path
) -> None:
    assert case.resume is not None
    every, crash_at = case.resume.checkpoint_every, case.resume.crash_at
    assert crash_at % every, "the crash must come between checkpoints"
    spec = case.spec(kind_runs.inputs, checkpoint_every=every)
    crashed = LocalContext(tmp_path, cache=warm.cache, checkpoint_every=every, crash_at=crash_at)
    with pytest.raises(SimulatedCrash):
        case.run(spec, crashed)
    assert crashed.saved_steps == list(range(every, crash_at, every))
    last = crashed.saved_steps[-1]

    resumed = case.run(spec, LocalContext(tmp_path, cache=warm.cache, checkpoint_every=every))
    assert resumed.progress_calls[0].step == last + 1
    assert resumed.progress_calls == reference.progress_calls[last:]
    assert output_files(resumed) == output_files(reference)


def test_warm_cache_is_reused_and_reset_between_jobs(
    case: KindCase, reference: LocalContext, warm: Warm
) -> None:
    assert warm.builds and set(warm.builds.values()) == {1}, warm.builds
    assert warm.jobs and set(warm.jobs.values()) == {2}, warm.jobs
    assert warm.traces, "an entry with a compiled step"
    for key, traces in warm.traces.items():
        assert max(traces.values()) == 1 and min(traces.values()) >= 0, (key, traces)
    if warm.problem is not None:
        raise warm.problem
    assert warm.run.progress_calls == reference.progress_calls
    assert warm.run.metric_events == reference.metric_events
    assert output_files(warm.run) == output_files(reference)


def test_non_finite_loss_fails_the_job_without_retries(
    case: KindCase, warm: Warm, kind_runs: KindRuns, tmp_path: Path
) -> None:
    assert case.resume is not None
    spec = case.spec(kind_runs.inputs, **case.resume.non_finite)
    with pytest.raises(JobError) as error:
        case.run(spec, LocalContext(tmp_path, cache=warm.cache))
    assert (error.value.code, error.value.retryable) == ("nan_loss", False)
    assert "\n" not in error.value.message and case.resume.nan_message in error.value.message


# --- every kind, resumable or not ------------------------------------------------------------

ONE_CASE_PER_KIND = list({case.kind: case for case in CASES.values()}.values())


def assert_imports_without_tensorflow(*modules: str) -> None:
    code = (
        f"import sys, {', '.join(modules)}\n"
        "loaded = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not loaded, loaded"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.parametrize("case", ONE_CASE_PER_KIND, ids=lambda case: case.kind)
def test_importing_the_kind_does_not_load_tensorflow(case: KindCase) -> None:
    assert_imports_without_tensorflow(kind_modules()[case.kind])


def test_importing_the_spec_helpers_does_not_load_tensorflow() -> None:
    assert_imports_without_tensorflow(*HELPER_MODULES)


BAD_SPECS = [
    pytest.param(case, changes, message, id=f"{case.name}-{json.dumps(changes)}")
    for case in CASES.values()
    for changes, message in case.bad
]


@pytest.mark.parametrize(("case", "changes", "message"), BAD_SPECS)
def test_bad_spec_is_refused(
    case: KindCase, changes: dict[str, Any], message: str | None, kind_runs: KindRuns
) -> None:
    values = case.values_for(kind_runs.inputs, **changes)
    match = re.escape(message) if message else None
    with pytest.raises(pydantic.ValidationError, match=match):
        case.module.Spec.model_validate_json(json.dumps(values))  # as submit and the worker
    with pytest.raises(pydantic.ValidationError):
        case.module.Spec(**values)
    case.spec(kind_runs.inputs)  # the values it changes are valid
