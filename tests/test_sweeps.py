"""Hyperparameter sweeps: the points a command line asks for (pure functions, fast), and
`atelier sweep` on a real stack of each backend with the `counter` kind."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import pytest

from scheduler.cli import main
from scheduler.sweeps import (
    MAX_POINTS,
    SweepError,
    SweepReport,
    SweepRow,
    distinct,
    grid_points,
    last_metrics,
    parse_grid,
    parse_ranges,
    random_points,
    ranked,
    split_values,
    sweep_points,
    swept_fields,
)
from tests.fixtures.stacks import Stack

# --- points ------------------------------------------------------------------------------


def test_grid_values_are_read_as_set_reads_them() -> None:
    axes = parse_grid(
        "counter",
        ["steps=3,6", "step_seconds=0,1e-2", "fail_on_attempts=[1,2],[3]",
         'source=386e7667,"a,b",12'],
    )  # fmt: skip
    assert axes == {
        "steps": [3, 6],
        "step_seconds": [0, 0.01],
        "fail_on_attempts": [[1, 2], [3]],  # commas inside brackets stay in the value
        "source": ["386e7667", "a,b", "12"],  # a text field keeps ids as typed
    }


def test_grid_points_are_every_combination_last_axis_fastest() -> None:
    points = grid_points({"steps": [3, 6], "step_seconds": [0, 0.01, 0.02]})
    assert points == [
        {"steps": s, "step_seconds": t} for s in (3, 6) for t in (0, 0.01, 0.02)
    ]  # fmt: skip


def test_split_values_respects_json_strings_and_brackets() -> None:
    assert split_values('"a\\",b",c') == ['"a\\",b"', "c"]  # an escaped quote stays inside
    assert split_values('{"x":1,"y":2},[]') == ['{"x":1,"y":2}', "[]"]
    assert split_values("adam,sgd") == ["adam", "sgd"]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["steps"], "--grid expects FIELD=V1,V2,..., got 'steps'"),
        (["=3,6"], "--grid expects FIELD=V1,V2,..., got '=3,6'"),
        (["steps="], "--grid 'steps=': no values"),
        (["steps=1,,2"], "--grid 'steps=1,,2': an empty value"),
        (["steps=1,"], "--grid 'steps=1,': an empty value"),
        (["nope=1,2"], "counter: unknown field 'nope' in --grid 'nope=1,2'"),
        (["steps=1", "steps=2"], "--grid steps is given twice"),
    ],
)
def test_bad_grids_are_refused(items: list[str], message: str) -> None:
    with pytest.raises(SweepError) as raised:
        parse_grid("counter", items)
    assert str(raised.value).startswith(message), str(raised.value)


@pytest.mark.parametrize(
    ("grid", "ranges", "count", "message"),
    [
        ([], [], None, "a sweep needs --grid"),
        ([], ["steps=1:5"], None, "--range needs --random N"),
        ([], [], 3, "--random needs at least one --range"),
        (["steps=1,2"], ["step_seconds=0:1"], 3, "--grid and --random do not combine"),
        ([], ["steps=1:5"], 0, "--random needs at least 1 point, got 0"),
        ([], ["steps=1:5"], MAX_POINTS + 1, f"a sweep of {MAX_POINTS + 1} points is more"),
        ([f"seed={','.join(map(str, range(40)))}", f"steps={','.join(['1'] * 30)}"], [], None,
         "a sweep of 1200 points is more than 1000"),
    ],
)  # fmt: skip
def test_bad_sweeps_are_refused(
    grid: list[str], ranges: list[str], count: int | None, message: str
) -> None:
    with pytest.raises(SweepError) as raised:
        sweep_points("counter", grid, ranges, count, seed=0)
    assert str(raised.value).startswith(message), str(raised.value)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("steps=1", "--range expects FIELD=LOW:HIGH or FIELD=LOW:HIGH:log, got 'steps=1'"),
        ("steps=1:5:lin", "--range expects FIELD=LOW:HIGH or FIELD=LOW:HIGH:log"),
        ("steps=5:1", "--range 'steps=5:1': LOW must be below HIGH"),
        ("steps=5:5", "--range 'steps=5:5': LOW must be below HIGH"),
        ("step_seconds=0:1:log", "--range 'step_seconds=0:1:log': a log range needs LOW above 0"),
        ("steps=1.5:4", "--range 'steps=1.5:4': counter field 'steps' takes whole numbers"),
        ("source=1:4", "--range 'source=1:4': counter field 'source' is not a number"),
        ("fail_on_attempts=1:4", "counter field 'fail_on_attempts' is not a number"),
        ("steps=a:4", "--range 'steps=a:4': 'a' is not a number"),
        ("steps=1:inf", "--range 'steps=1:inf': 'inf' is not a finite number"),
        ("nope=1:2", "counter: unknown field 'nope' in --range 'nope=1:2'"),
    ],
)
def test_bad_ranges_are_refused(item: str, message: str) -> None:
    with pytest.raises(SweepError) as raised:
        parse_ranges("counter", [item])
    assert message in str(raised.value), str(raised.value)


def test_random_points_follow_the_fields_types_and_ranges() -> None:
    ranges = parse_ranges(
        "counter", ["steps=2:9", "metrics_every=1:1000:log", "step_seconds=1:3",
                    "checkpoint_mb=1e-5:1e-1:log"],
    )  # fmt: skip
    points = random_points(ranges, MAX_POINTS, seed=7)
    assert points == random_points(ranges, MAX_POINTS, seed=7)  # the same seed, the same points
    assert points != random_points(ranges, MAX_POINTS, seed=8)
    steps = [p["steps"] for p in points]
    assert all(type(s) is int for s in steps) and set(steps) == set(range(2, 10))
    everys = [p["metrics_every"] for p in points]
    assert all(type(e) is int and 1 <= e <= 1000 for e in everys)
    # Log-uniform: as many below the geometric middle (31.6) as above; uniform would put
    # about 3 % below it.
    assert 0.4 < sum(e < 31.6 for e in everys) / len(everys) < 0.6
    seconds = [p["step_seconds"] for p in points]  # a float field: floats, even from 1:3
    assert all(type(s) is float and 1 <= s <= 3 for s in seconds)
    assert 1.9 < statistics.mean(seconds) < 2.1
    sizes = [p["checkpoint_mb"] for p in points]
    assert all(1e-5 <= s <= 1e-1 for s in sizes)
    assert 0.4 < sum(s < 1e-3 for s in sizes) / len(sizes) < 0.6
    assert all(float(f"{s:.6g}") == s for s in sizes + seconds)  # readable in a table


def test_distinct_keeps_the_first_of_identical_specs() -> None:
    specs: list[dict[str, Any]] = [{"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, {"a": 1.5}]
    specs.append({"a": 1})
    assert distinct(specs) == [0, 2, 3]


# --- comparing ---------------------------------------------------------------------------


def rows(*values: float | None) -> list[SweepRow]:
    return [
        SweepRow(f"job{i}", "succeeded", {}, {} if v is None else {"loss": v, "other": 1.0})
        for i, v in enumerate(values)
    ]


def test_ranked_puts_the_best_first_and_jobs_without_the_metric_last() -> None:
    given = rows(0.5, None, 0.2, math.nan, 0.9, 0.2)
    by_min = [row.id for row in ranked(given, "loss", "min")]
    assert by_min == ["job2", "job5", "job0", "job4", "job1", "job3"]  # ties keep their order
    by_max = [row.id for row in ranked(given, "loss", "max")]
    assert by_max == ["job4", "job0", "job2", "job5", "job1", "job3"]
    assert [row.id for row in ranked(given, None, "min")] == [f"job{i}" for i in range(6)]
    assert [row.id for row in ranked(given, "nope", "max")] == [f"job{i}" for i in range(6)]
    with pytest.raises(SweepError, match="--mode must be min or max"):
        ranked(given, "loss", "best")


def test_metrics_events_win_over_the_progress_report() -> None:
    progress = {"a": {"d_loss": 0.9, "g_loss": 2.0}, "b": {"total": 3.0}}
    events = {"a": {"d_loss": 0.5, "val_l1": 0.1}}
    assert last_metrics(progress, events) == {
        "a": {"d_loss": 0.5, "g_loss": 2.0, "val_l1": 0.1}, "b": {"total": 3.0}
    }  # fmt: skip


def test_swept_fields_are_those_that_differ() -> None:
    specs = [{"a": 1, "b": [1], "c": "x"}, {"a": 2, "b": [1], "c": "x"}, {"a": 1, "b": [2]}]
    assert swept_fields(specs) == ["a", "b", "c"]
    assert swept_fields(specs[:2]) == ["a"]


def test_report_table() -> None:
    report = SweepReport(
        "abc", "total", "max", ["steps", "note"],
        [SweepRow("j1", "succeeded", {"steps": 6, "note": None}, {"total": 21.0, "a": 0.123456}),
         SweepRow("j2", "running", {"steps": 3, "note": "x"}, {})],
    )  # fmt: skip
    assert report.lines() == [
        "job  status     steps  note  total  a",
        "j1   succeeded  6      null  21     0.1235",
        "j2   running    3      x     -      -",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "counter", "--grid", "steps"], "--grid expects FIELD=V1,V2,..."),
        (["sweep", "counter", "--random", "2"], "--random needs at least one --range"),
        (["cancel"], "cancel takes a job or --sweep ID, not both or neither"),
        (["pause", "abcd", "--sweep", "abcd"], "pause takes a job or --sweep ID"),
    ],
)
def test_cli_refuses_before_reaching_the_database(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"atelier: error: {message}") and err.count("\n") == 1, err


# --- on a real stack ---------------------------------------------------------------------


def sweep(stack: Stack, *args: str) -> tuple[str, list[str], str]:
    """`atelier sweep counter ARGS`: the sweep id, the job ids, stderr."""
    result = stack.cli("sweep", "counter", *args)
    assert result.returncode == 0, result.stderr
    sweep_id, *job_ids = result.stdout.split()
    return sweep_id, job_ids, result.stderr


def show(stack: Stack, sweep_id: str, *args: str) -> dict:
    return json.loads(stack.cli("sweep", "show", sweep_id, "--json", *args, check=True).stdout)


def test_sweep_on_a_real_stack(stack: Stack) -> None:
    before = len(stack.client.list(limit=10_000))
    # A bad value in one point: refused before any job of the sweep is stored.
    bad = stack.cli("sweep", "counter", "--grid", "step_seconds=0,0.01", "--grid", "steps=3,0")
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr
    assert lines[0].startswith("atelier: error: counter: field 'steps': ")
    assert lines[0].endswith("(got 0) (sweep point step_seconds=0 steps=0)"), lines[0]
    assert len(stack.client.list(limit=10_000)) == before

    result = stack.cli(
        "sweep", "counter", "--grid", "steps=3,6", "--grid", "step_seconds=0,0.01",
        "--set", "checkpoint_every=100", "--owner", "alice", "--priority", "2", "--no-preempt",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    submitted = json.loads(result.stdout)
    sweep_id, job_ids = submitted["sweep"], submitted["jobs"]
    assert len(job_ids) == 4 and len(sweep_id) == 12
    views = [stack.client.get(job_id) for job_id in job_ids]
    assert [(v.spec["steps"], v.spec["step_seconds"]) for v in views] == [
        (3, 0.0), (3, 0.01), (6, 0.0), (6, 0.01)
    ]  # fmt: skip
    for view in views:
        assert (view.sweep_id, view.owner, view.priority, view.preemptible) == (
            sweep_id, "alice", 2, False
        )  # fmt: skip
        assert view.spec["checkpoint_every"] == 100

    # Every repeated point (0 and 0.0 are one value of a float field) is submitted once.
    _, repeated_jobs, err = sweep(stack, "--grid", "steps=2,3", "--grid", "step_seconds=0,0.0")
    assert len(repeated_jobs) == 2 and "2 repeated points submitted once" in err
    assert sorted(stack.client.get(j).spec["steps"] for j in repeated_jobs) == [2, 3]

    # Random points: the seeded draws of the same ranges, as jobs.
    ranges = ["steps=2:9", "step_seconds=0:0.01"]
    _, drawn_jobs, _ = sweep(
        stack, "--random", "3", "--seed", "5", *(a for r in ranges for a in ("--range", r))
    )
    expected = random_points(parse_ranges("counter", ranges), 3, seed=5)
    specs = [stack.client.get(job_id).spec for job_id in drawn_jobs]
    assert [{f: s[f] for f in ("steps", "step_seconds")} for s in specs] == expected

    for job_id in job_ids + repeated_jobs + drawn_jobs:
        assert stack.wait(job_id).status == "succeeded"

    best = show(stack, sweep_id[:6], "--metric", "total", "--mode", "max")  # a prefix will do
    assert (best["sweep"], best["metric"], best["mode"]) == (sweep_id, "total", "max")
    assert [row["metrics"]["total"] for row in best["jobs"]] == [21.0, 21.0, 6.0, 6.0]
    assert [row["fields"] for row in best["jobs"]] == [
        {"step_seconds": t, "steps": s} for s, t in ((6, 0.0), (6, 0.01), (3, 0.0), (3, 0.01))
    ]  # fmt: skip
    assert {row["id"] for row in best["jobs"]} == set(job_ids)
    assert {row["status"] for row in best["jobs"]} == {"succeeded"}
    table = stack.cli("sweep", "show", sweep_id, "--metric", "total", check=True).stdout
    assert table.split("\n")[0].split() == ["job", "status", "step_seconds", "steps", "total"]
    assert [line.split()[-1] for line in table.strip().split("\n")[1:]] == ["6", "6", "21", "21"]
    listed = json.loads(stack.cli("list", "--sweep", sweep_id, "--json", check=True).stdout)
    assert sorted(view["id"] for view in listed) == sorted(job_ids)

    # Pause, resume and cancel every job of another sweep that is not over yet.
    other, other_jobs, _ = sweep(
        stack, "--grid", "steps=1,3000,3001", "--set", "step_seconds=0.02",
        "--set", "checkpoint_every=10",
    )  # fmt: skip
    short, *long = other_jobs
    assert stack.wait(short).status == "succeeded"
    paused = stack.cli("pause", "--sweep", other, check=True).stdout.split("\n")
    assert {line.split()[0] for line in paused if line} == set(long)

    def all_paused() -> bool:
        return all(stack.client.get(job_id).status == "paused" for job_id in long)

    stack.wait_for(all_paused, timeout=30, what="the sweep's jobs to pause")
    resumed = stack.cli("resume", "--sweep", other, check=True).stdout
    assert sorted(resumed.split()) == sorted([*long, "pending", "pending"])
    cancelled = stack.cli("cancel", "--sweep", other, check=True).stdout.split("\n")
    assert {line.split()[0] for line in cancelled if line} == set(long)
    assert [stack.wait(job_id).status for job_id in other_jobs] == [
        "succeeded", "cancelled", "cancelled"
    ]  # fmt: skip
    again = stack.cli("cancel", "--sweep", other)
    assert again.returncode == 1 and f"no job of sweep {other} can cancel" in again.stderr
    assert {stack.client.get(job_id).status for job_id in job_ids} == {"succeeded"}
    missing = stack.cli("sweep", "show", "feedfacefeed")
    assert missing.returncode == 2 and "no sweep 'feedfacefeed'" in missing.stderr
