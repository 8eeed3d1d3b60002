"""Continuing a finished job (`submit --from JOB`): the new job starts from the source's
final checkpoint (weights, optimizer state, counters), so it must build the same
networks on the same data. Its spec is the source's, with the fields the user gave; of
those, only the ones below may differ."""

from __future__ import annotations

from typing import Any

from core.inputs import input_keys
from db.models import Job, JobStatus
from scheduler.specs import SpecError, ValidSpec

MAY_CHANGE = frozenset({"epochs", "checkpoint_every", "samples", "quality", "quality_every"})
"""Fields a continuation may set to new values: how long it trains, how often it saves,
how much it shows and measures. Any other field can change the shapes or the data the checkpoint
holds."""


def check_source(kind: str, checkpointed: bool, source: Job, *, has_checkpoint: bool) -> None:
    """Refuse, in one line with the reason, a source that cannot be continued as `kind`."""
    named = f"--from {source.id}"
    if not checkpointed:
        raise SpecError(f"{named}: {kind} jobs keep no checkpoint, so none can be continued")
    if source.kind != kind:
        raise SpecError(f"{named}: that is a {source.kind} job, not {kind}")
    if not JobStatus(source.status).final:
        raise SpecError(f"{named}: that job is {source.status}; continue it once it has ended")
    if not has_checkpoint:
        raise SpecError(f"{named}: that job kept no checkpoint (pruned, or it never saved one)")


def check_changes(
    valid: ValidSpec, source: Job, given: dict[str, Any], input_files: tuple[str, ...]
) -> None:
    """Refuse a continuation whose given fields change what the checkpoint holds."""
    named = f"--from {source.id}"
    # Input files as the store keys them, for the given fields only (each is hashed).
    keyed = input_keys({name: valid.values.get(name) for name in given}, input_files)
    changed = sorted(
        name
        for name in given
        if name not in MAY_CHANGE and keyed.get(name) != source.spec.get(name)
    )
    if changed:
        allowed = ", ".join(sorted(MAY_CHANGE))
        raise SpecError(
            f"{named}: a continued job may change only {allowed}; "
            f"{', '.join(changed)} would change what its checkpoint holds"
        )
    before, after = source.spec.get("epochs"), valid.values.get("epochs")
    if isinstance(before, int) and isinstance(after, int) and after <= before:
        raise SpecError(f"{named}: epochs counts from the start: give more than its {before}")
