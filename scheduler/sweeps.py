"""Hyperparameter sweeps: one job per point of a grid, or of N seeded random points, all
tagged with one sweep id; then a table of the sweep's jobs, best first.

The points are expanded and checked here before anything is stored: every point's spec is
validated (as `submit` validates it) before the first job is submitted, so a bad value
leaves no job behind. Points whose specs are identical once defaults are filled in are
submitted once.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import types
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

from pydantic import BaseModel

from kinds import load_kind
from scheduler.specs import SpecError, parse_assignments

if TYPE_CHECKING:
    from scheduler.client import Client

MAX_POINTS = 1000
"""More points than this is almost surely a typo in a grid; split a bigger sweep."""
RANDOM_DIGITS = 6
"""Significant digits of a random float: readable specs and tables, no real loss."""
MODES = ("min", "max")


class SweepError(SpecError):
    """A sweep that cannot be expanded or submitted; the message names the option."""


@dataclass(frozen=True)
class Range:
    """`--range field=low:high[:log]`: uniform (or log-uniform) draws in [low, high]."""

    field: str
    low: float
    high: float
    log: bool
    integer: bool


# --- points ------------------------------------------------------------------------------


def sweep_points(
    kind: str, grid: Sequence[str], ranges: Sequence[str], count: int | None, seed: int
) -> list[dict[str, Any]]:
    """The points the command line asks for: the grid of `--grid` items, or `count`
    random points of the `--range` items."""
    if count is None:
        if ranges:
            raise SweepError("--range needs --random N (how many points to draw)")
        if not grid:
            raise SweepError("a sweep needs --grid FIELD=V1,V2,... or --random N with --range")
        return grid_points(parse_grid(kind, grid))
    if grid:
        raise SweepError("--grid and --random do not combine: a sweep is a grid or random points")
    if not ranges:
        raise SweepError("--random needs at least one --range FIELD=LOW:HIGH[:log]")
    return random_points(parse_ranges(kind, ranges), count, seed)


def parse_grid(kind: str, items: Sequence[str]) -> dict[str, list[Any]]:
    """`field=v1,v2,...` items -> field -> values, each value read as `--set` reads one."""
    spec = _spec_model(kind)
    axes: dict[str, list[Any]] = {}
    for item in items:
        field, raw = _field_and_text(kind, spec, item, "--grid", "FIELD=V1,V2,...")
        if field in axes:
            raise SweepError(f"--grid {field} is given twice: list all its values in one --grid")
        pieces = split_values(raw)
        if any(not piece.strip() for piece in pieces):
            raise SweepError(f"--grid {item!r}: an empty value (values are separated by commas)")
        axes[field] = [parse_assignments(kind, [f"{field}={p}"])[field] for p in pieces]
    return axes


def grid_points(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values; the last axis varies fastest."""
    size = math.prod(len(values) for values in axes.values())
    _check_size(size)
    fields = list(axes)
    return [dict(zip(fields, combo, strict=True)) for combo in itertools.product(*axes.values())]


def split_values(raw: str) -> list[str]:
    """`raw` split at its commas, except those inside JSON brackets or strings: `[1,2],[3]`
    is two lists, `"a,b",c` two strings."""
    pieces: list[str] = []
    current: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in raw:
        if quoted:  # inside a JSON string: only its closing quote matters
            quoted = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            quoted = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return pieces


def parse_ranges(kind: str, items: Sequence[str]) -> list[Range]:
    spec = _spec_model(kind)
    ranges: list[Range] = []
    for item in items:
        field, raw = _field_and_text(kind, spec, item, "--range", "FIELD=LOW:HIGH[:log]")
        if field in {r.field for r in ranges}:
            raise SweepError(f"--range {field} is given twice")
        ranges.append(_range(kind, spec, field, raw, item))
    return ranges


def _range(kind: str, spec: type[BaseModel], field: str, raw: str, item: str) -> Range:
    parts = raw.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
        raise SweepError(f"--range expects FIELD=LOW:HIGH or FIELD=LOW:HIGH:log, got {item!r}")
    low, high = (_number(part, item) for part in parts[:2])
    log = len(parts) == 3
    if not low < high:
        raise SweepError(f"--range {item!r}: LOW must be below HIGH")
    if log and low <= 0:
        raise SweepError(f"--range {item!r}: a log range needs LOW above 0")
    number = _number_type(spec, field)
    whole = all(_is_int(part) for part in parts[:2])
    if number is None:
        raise SweepError(f"--range {item!r}: {kind} field {field!r} is not a number")
    integer = number is int or (number is Any and whole)
    if integer and not whole:
        raise SweepError(f"--range {item!r}: {kind} field {field!r} takes whole numbers")
    return Range(field, low, high, log, integer)


def random_points(ranges: Sequence[Range], count: int, seed: int) -> list[dict[str, Any]]:
    """`count` points, each field drawn from its range; the same seed draws the same points."""
    if count < 1:
        raise SweepError(f"--random needs at least 1 point, got {count}")
    _check_size(count)
    rng = random.Random(seed)
    return [{r.field: _draw(rng, r) for r in ranges} for _ in range(count)]


def _draw(rng: random.Random, r: Range) -> int | float:
    if r.integer:
        low, high = int(r.low), int(r.high)
        if not r.log:
            return rng.randint(low, high)
        # Each whole number k takes the log-width of [k - 0.5, k + 0.5].
        drawn = math.exp(rng.uniform(math.log(low - 0.5), math.log(high + 0.5)))
        return min(max(round(drawn), low), high)
    if r.log:
        drawn = math.exp(rng.uniform(math.log(r.low), math.log(r.high)))
    else:
        drawn = rng.uniform(r.low, r.high)
    return min(max(float(f"{drawn:.{RANDOM_DIGITS}g}"), r.low), r.high)


def _check_size(size: int) -> None:
    if size > MAX_POINTS:
        raise SweepError(f"a sweep of {size} points is more than {MAX_POINTS}: split it")


def _spec_model(kind: str) -> type[BaseModel]:
    try:
        spec: type[BaseModel] = load_kind(kind).Spec
    except ValueError as error:
        raise SweepError(str(error)) from None
    return spec


def _field_and_text(
    kind: str, spec: type[BaseModel], item: str, option: str, form: str
) -> tuple[str, str]:
    field, sep, raw = item.partition("=")
    field = field.strip()
    if not sep or not field:
        raise SweepError(f"{option} expects {form}, got {item!r}")
    if field not in spec.model_fields:
        raise SweepError(f"{kind}: unknown field {field!r} in {option} {item!r}")
    if not raw.strip():
        raise SweepError(f"{option} {item!r}: no values")
    return field, raw


def _number(text: str, item: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SweepError(f"--range {item!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SweepError(f"--range {item!r}: {text!r} is not a finite number")
    return value


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _number_type(spec: type[BaseModel], field: str) -> Any:
    """int or float for a field that takes numbers (of one type), Any when its annotation
    does not say, None when it takes no numbers."""
    annotation = spec.model_fields[field].annotation
    if annotation is Any or annotation is None:
        return Any
    union = get_origin(annotation) in (Union, types.UnionType)
    options = set(get_args(annotation) if union else (annotation,)) - {type(None)}
    if options == {int}:
        return int
    if float in options and options <= {int, float}:
        return float
    return None


# --- submitting --------------------------------------------------------------------------


def new_sweep_id() -> str:
    return uuid.uuid4().hex[:12]


def point_text(point: dict[str, Any]) -> str:
    return " ".join(f"{field}={json.dumps(value)}" for field, value in point.items())


def canonical(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def distinct(specs: Sequence[dict[str, Any]]) -> list[int]:
    """The indexes of the specs that repeat no earlier one."""
    seen: set[str] = set()
    kept = []
    for index, spec in enumerate(specs):
        key = canonical(spec)
        if key not in seen:
            seen.add(key)
            kept.append(index)
    return kept


def submit_sweep(
    client: Client,
    kind: str,
    base_spec: dict[str, Any],
    points: Sequence[dict[str, Any]],
    **options: Any,
) -> tuple[str, list[str]]:
    """Submit one job per distinct point (the point's fields over `base_spec`), each with
    `options` (Client.submit's) and a new sweep id: (the sweep id, the job ids)."""
    if not points:
        raise SweepError("a sweep needs at least one point")
    specs = [{**base_spec, **point} for point in points]
    checked = [
        _checked(client, kind, spec, point) for spec, point in zip(specs, points, strict=True)
    ]
    sweep_id = new_sweep_id()
    job_ids = [
        client.submit(kind, specs[index], sweep_id=sweep_id, **options)
        for index in distinct(checked)
    ]
    return sweep_id, job_ids


def _checked(
    client: Client, kind: str, spec: dict[str, Any], point: dict[str, Any]
) -> dict[str, Any]:
    try:
        return client.checked_spec(kind, spec)
    except SpecError as error:
        raise SweepError(f"{error} (sweep point {point_text(point)})") from None


def change_sweep(client: Client, sweep_id: str, action: str) -> list[tuple[str, str | None]]:
    """Cancel, pause or resume every job of the sweep that can be: (job id, the outcome,
    None for a job that was not in a state to change)."""
    change = {"cancel": client.cancel, "pause": client.pause, "resume": client.resume}[action]
    return [
        (view.id, None if view.final else change(view.id)) for view in client.sweep_jobs(sweep_id)
    ]


# --- comparing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepRow:
    id: str
    status: str
    fields: dict[str, Any]
    """The swept fields' values."""
    metrics: dict[str, float]
    """The last recorded value of each metric."""


@dataclass(frozen=True)
class SweepReport:
    sweep_id: str
    metric: str | None
    mode: str
    fields: list[str]
    rows: list[SweepRow]
    """Best first by `metric` (jobs without it last); else in the order submitted."""

    def as_json(self) -> dict[str, Any]:
        rows = [row.__dict__ for row in self.rows]
        return {"sweep": self.sweep_id, "metric": self.metric, "mode": self.mode, "jobs": rows}

    def lines(self) -> list[str]:
        names = sorted({name for row in self.rows for name in row.metrics})
        if self.metric is not None:
            names = [self.metric, *(name for name in names if name != self.metric)]
        header = ["job", "status", *self.fields, *names]
        table = [header] + [
            [row.id, row.status]
            + [_cell(row.fields.get(field), "null") for field in self.fields]
            + [_cell(row.metrics.get(name)) for name in names]
            for row in self.rows
        ]
        widths = [max(len(line[column]) for line in table) for column in range(len(header))]
        return ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                for line in table]  # fmt: skip


def sweep_report(client: Client, sweep_id: str, metric: str | None, mode: str) -> SweepReport:
    views = client.sweep_jobs(sweep_id)
    resolved = views[0].sweep_id or sweep_id
    progress = {view.id: view.metrics for view in views}
    metrics = last_metrics(progress, client.sweep_metrics(resolved))
    fields = swept_fields([view.spec for view in views])
    rows = [
        SweepRow(view.id, view.status, {f: view.spec.get(f) for f in fields}, metrics[view.id])
        for view in views
    ]
    return SweepReport(resolved, metric, mode, fields, ranked(rows, metric, mode))


def last_metrics(
    progress: dict[str, dict[str, float]], events: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Each job's metrics: the last metrics event's value of each (a kind's per-epoch
    means), else its latest progress report's."""
    return {job_id: {**values, **events.get(job_id, {})} for job_id, values in progress.items()}


def swept_fields(specs: Sequence[dict[str, Any]]) -> list[str]:
    """The fields whose values differ between the specs: what the sweep varied."""
    names = sorted({name for spec in specs for name in spec})
    return [
        name for name in names
        if len({json.dumps(spec.get(name), sort_keys=True) for spec in specs}) > 1
    ]  # fmt: skip


def ranked(rows: Sequence[SweepRow], metric: str | None, mode: str) -> list[SweepRow]:
    """Best first by `metric` (`mode` min or max); rows without a finite value of it last;
    ties and everything without a metric in the order given."""
    if mode not in MODES:
        raise SweepError(f"--mode must be min or max, got {mode!r}")
    if metric is None:
        return list(rows)
    sign = -1.0 if mode == "max" else 1.0

    def key(row: SweepRow) -> tuple[bool, float]:
        value = row.metrics.get(metric)
        if value is None or not math.isfinite(value):
            return True, 0.0
        return False, sign * value

    return sorted(rows, key=key)


def _cell(value: Any, missing: str = "-") -> str:
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)
