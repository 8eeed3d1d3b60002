"""What a job kind may use while it runs: the contract between kinds and the runtime.

A job kind is a module with `Spec` (a pydantic model), `DEFAULT_QUEUE` and
`run(spec, ctx)`, and optionally:

- `INPUT_FILES`: names of spec fields holding paths of input files (a path or a list of
  paths). They are copied into the input store at submit; `run` sees the stored copies.
- `MODEL_INPUTS`: spec field name -> kinds whose jobs it may name (e.g. a sampler's
  `model` field naming a `dcgan` job). Submit checks the named job and makes this job wait
  for it; `run` reads its files with `ctx.outputs_of`.

It never imports Celery, Redis or SQLAlchemy; everything it needs from the platform
comes through the `JobContext` below. A validator that needs more than the spec at
submit (another job's files) finds a `Submission` in pydantic's `info.context`; the
worker validates again before `run` without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # numpy stays out of the CLI's imports
    import numpy as np


OutputData = bytes | Callable[[Path], object]
"""An output's content: its bytes, or a function that writes the file at the path given."""


def as_writer(data: OutputData) -> Callable[[Path], object]:
    """`data` as a function writing the output's file."""
    if callable(data):
        return data
    return lambda path: path.write_bytes(data)


REMOTE_FOLDER_SCHEME = "s3://"
"""A spec field that takes a folder of data (a dataset, a corpus) also takes an
object-store prefix, `s3://bucket/prefix`: the worker syncs it into its cache and the kind
sees the local copy. A Spec lists such fields in its `folder_fields`."""


def is_remote_folder(value: object) -> bool:
    return isinstance(value, str) and value.startswith(REMOTE_FOLDER_SCHEME)


@dataclass(frozen=True)
class RemoteFile:
    name: str
    """Relative to the folder, with `/` between parts."""
    bytes: int


@dataclass(frozen=True)
class Submission:
    """Validation context at submit (absent when the worker validates before `run`)."""

    outputs_of: Callable[[str, str], tuple[str, Mapping[str, Path]] | None]
    """`outputs_of(reference, role)`: the id of the job a reference names (an id, a unique
    prefix, or `#N` for one of its outputs) and its recorded outputs of `role` by name;
    None when no job answers to it."""
    list_folder: Callable[[str], list[RemoteFile]] | None = None
    """`list_folder("s3://bucket/prefix")`: the files under an object-store folder (a
    ValueError with one line if it cannot be listed); None where nothing can list one."""


class JobSpec(BaseModel):
    """Base of every kind's spec: unknown fields are errors, values are checked strictly,
    and no float is infinite or NaN."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class CheckpointedSpec(JobSpec):
    """Fields every resumable kind shares."""

    seed: int = Field(0, ge=0, description="seed for weights, noise and data order")
    deterministic: bool = Field(False, description="bit-identical results across resumes")
    checkpoint_every: int = Field(200, gt=0, description="steps between checkpoints")


@dataclass(frozen=True)
class Checkpoint:
    """Everything needed to resume: arrays (weights, optimizer slots) and JSON metadata."""

    step: int
    arrays: Mapping[str, np.ndarray]
    meta: Mapping[str, Any] = field(default_factory=dict)


class JobError(Exception):
    """A failure the kind understands: a stable code, a one-line message, retry or not."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class ModelCache(Protocol):
    def get_or_build(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        """The object cached under `key` in this worker process, built on first use."""


class JobContext(Protocol):
    job_id: str
    attempt: int
    cache: ModelCache
    cache_dir: Path
    """A folder on this worker's machine that outlives jobs, for what a kind builds once
    per worker (the glyph feature classifier); write into it atomically."""

    def restore(self) -> Checkpoint | None:
        """The latest readable checkpoint of this job, or None on a fresh start."""

    def boundary(self, step: int, snapshot: Callable[[], Checkpoint]) -> None:
        """Call after each finished step. Saves `snapshot()` every `checkpoint_every`
        steps and whenever a stop (cancel, pause, shutdown) is requested; on a stop it
        then raises, so the kind's loop simply ends there."""

    def should_stop(self) -> bool:
        """True once a stop is requested (for loops without a natural step boundary)."""

    def progress(
        self,
        step: int,
        total: int,
        *,
        epoch: int | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Report progress; cheap to call every step (writes are throttled)."""

    def metrics(
        self,
        values: Mapping[str, float],
        *,
        step: int,
        epoch: int | None = None,
        notes: Mapping[str, str] | None = None,
    ) -> None:
        """Record a metrics event (e.g. at the end of each epoch); `notes` say how values
        were measured (which features an FID used)."""

    def outputs_of(self, job_id: str, role: str) -> dict[str, Path]:
        """Files another job recorded under `role`, by name (e.g. its "model" outputs)."""

    def save_output(
        self,
        role: str,
        name: str,
        data: OutputData,
        *,
        step: int | None = None,
        epoch: int | None = None,
    ) -> Path:
        """Publish an output atomically under this job's output folder and record it (once:
        saving the same role and name again replaces the file and its record). `data` is
        the file's bytes or a function writing it; `role` is e.g. sample, image, model;
        `name` a plain file name."""
