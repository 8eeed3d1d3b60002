"""The `atelier` command. Submitting and inspecting stay fast: no TensorFlow, no Celery.

Errors reach the user as one line: a problem with what was asked (a bad spec, an unknown
job, a setting) exits with code 2; a database that cannot be reached with code 3;
anything else exits with code 1 and leaves its traceback in a log file that the line
names.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import threading

    from core.settings import Settings
    from scheduler.client import Client, JobView

DEFAULT_QUEUES = "gpu,cpu"
EXIT_FAILED, EXIT_USER_ERROR, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 1, 2, 3, 130
CLI_LOG = "logs/cli.log"
"""Under ATELIER_HOME: the tracebacks of unexpected CLI failures."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        # The worker is its own program; this process becomes it (same pid and signals).
        os.execv(sys.executable, [sys.executable, "-m", "worker", *argv[1:]])
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as error:
        return _report(error)


def _report(error: Exception) -> int:
    """One line on stderr; the exit code says whose problem it is."""
    from core.errors import UserError, detail, one_line
    from core.storage import CorruptFile, StorageUnavailable
    from db.engine import UNAVAILABLE
    from db.migrate import SchemaOutdated

    if isinstance(error, UserError | SchemaOutdated):
        print(f"atelier: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    if isinstance(error, UNAVAILABLE):
        database = _database_location()
        reason = detail(getattr(error, "orig", None) or error)  # the driver's words
        print(f"atelier: error: database unreachable at {database}: {reason}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if isinstance(error, StorageUnavailable):
        print(f"atelier: error: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if isinstance(error, CorruptFile):
        print(f"atelier: failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    log = _log_traceback(error)
    print(f"atelier: failed: {one_line(error)} (traceback in {log})", file=sys.stderr)
    return EXIT_FAILED


def _database_location() -> str:
    from core.settings import load_settings
    from db.engine import where

    return where(load_settings().database_url)


def _log_traceback(error: Exception) -> Path:
    text = "".join(traceback.format_exception(error))
    try:
        from core.settings import load_settings

        path = load_settings().home / CLI_LOG
        path.parent.mkdir(parents=True, exist_ok=True)
    except Exception:  # no usable home: the temp folder still takes it
        path = Path(tempfile.gettempdir()) / "atelier-cli.log"
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} atelier {' '.join(sys.argv[1:])}\n")
        log.write(text)
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atelier", description="Atelier: a batch job system for generative deep learning."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler: Any, help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.set_defaults(handler=handler)
        return sub

    submit = command("submit", cmd_submit, "validate a job and queue it; prints its id")
    _spec_arguments(submit)
    submit.add_argument("--after", metavar="JOB", help="start only after JOB succeeded")
    _placement_arguments(submit)
    _sharing_arguments(submit)
    submit.add_argument(
        "--from", dest="continues", metavar="JOB",
        help="start from the final checkpoint of JOB, a finished job of this kind",
    )  # fmt: skip
    submit.add_argument("--json", action="store_true", help='print {"id": ...}')

    run = command(
        "run", cmd_run, "run one job here and now (starting the embedded stack if none runs)"
    )
    _spec_arguments(run)
    run.add_argument("--workers", type=int, default=1)

    status = command("status", cmd_status, "a job's status, progress, worker and outputs")
    status.add_argument("job")
    status.add_argument("--json", action="store_true")

    listing = command("list", cmd_list, "recent jobs")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--owner", help="only jobs of this owner")
    listing.add_argument("--sweep", metavar="ID", help="only jobs of this sweep")
    listing.add_argument("--json", action="store_true")

    watch = command("watch", cmd_watch, "a live progress bar until the job ends")
    watch.add_argument("job")

    wait = command("wait", cmd_wait, "wait for a job to end; exit 0 only if it succeeded")
    wait.add_argument("job")
    wait.add_argument("--timeout", type=float)

    for name, help_ in (
        ("cancel", "cancel a job (a running one stops at its next step)"),
        ("pause", "pause a job (a running one checkpoints and stops)"),
        ("resume", "let a paused job run again from its checkpoint"),
    ):
        change = command(name, cmd_change, help_)
        change.add_argument("job", nargs="?")
        change.add_argument("--sweep", metavar="ID", help=f"{name} every job of this sweep")
        change.set_defaults(action=name)

    sweep = command(
        "sweep", cmd_sweep,
        "one job per point of a grid or of random points (`sweep KIND --help`); `sweep show ID`",
    )  # fmt: skip
    _sweep_targets(sweep)

    outputs = command("outputs", cmd_outputs, "a job's recorded outputs")
    outputs.add_argument("job")
    outputs.add_argument("--json", action="store_true")
    outputs.add_argument(
        "--download", type=Path, metavar="DIR",
        help="fetch the files into DIR/<role>/<name>, each checked against its sha256",
    )  # fmt: skip
    outputs.add_argument("--role", help="only outputs of this role (e.g. model, sample)")
    outputs.add_argument("--name", help="only outputs of this name (e.g. generator.keras)")

    events = command("events", cmd_events, "a job's history: starts, metrics, resumes, errors")
    events.add_argument("job")

    up = command("up", cmd_up, "run Redis (embedded), the scheduler and workers here")
    up.add_argument("--workers", type=int, default=1)
    up.add_argument("--queues", default=DEFAULT_QUEUES)

    scheduler = command("scheduler", cmd_scheduler, "run the scheduling loop and notifications")
    scheduler.add_argument(
        "--metrics-port", type=int, metavar="PORT",
        help="also serve the queue metrics (Prometheus' format) on this port",
    )  # fmt: skip
    scheduler.add_argument("--metrics-address", default="0.0.0.0", help="(default: all)")

    metrics = command("metrics", cmd_metrics, "serve the queue metrics in Prometheus' format")
    metrics.add_argument("--port", type=int, default=9808)
    metrics.add_argument("--address", default="0.0.0.0", help="interface to listen on (all)")

    board = command("tensorboard", cmd_tensorboard, "TensorBoard over jobs' curves and samples")
    board.add_argument("jobs", nargs="*", metavar="JOB", help="these jobs (default: all)")
    board.add_argument("--sweep", metavar="ID", help="the jobs of this sweep")
    board.add_argument("--port", type=int, default=6006)
    board.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: this machine only)"
    )

    commands.add_parser(
        "worker", help="run a Celery worker process, or one per GPU (see `atelier worker --help`)"
    )

    flower = command("flower", cmd_flower, "run Flower (monitoring UI and API) on the broker")
    flower.add_argument("--port", type=int, default=5555)
    flower.add_argument("--address", help="interface to listen on (default: all)")
    flower.add_argument("--url-prefix", help="serve under this path, behind a reverse proxy")
    flower.add_argument(
        "--local-only",
        action="store_true",
        help="allow running without credentials: listen on 127.0.0.1 only",
    )

    database = command("db", cmd_db, "database schema")
    database.add_argument("action", choices=["upgrade", "current"])

    prune = command("prune", cmd_prune, "remove finished jobs' rows, events and files")
    prune.add_argument(
        "--older-than", required=True, metavar="DURATION",
        help="jobs that finished longer ago than this (90m, 12h, 30d)",
    )  # fmt: skip
    prune.add_argument("--status", help="only these, comma-separated: succeeded,failed,cancelled")
    prune.add_argument(
        "--keep-models", action="store_true",
        help="keep each job's row, events and model outputs; remove its other outputs",
    )  # fmt: skip
    prune.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    prune.add_argument("--json", action="store_true")

    usage = command("du", cmd_du, "space used per job and role, largest first")
    usage.add_argument("job", nargs="?", help="only this job")
    usage.add_argument("--json", action="store_true")
    return parser


def _sharing_arguments(parser: argparse.ArgumentParser) -> None:
    """How a job shares the pool: `submit` and `sweep` take these."""
    parser.add_argument("--owner", help="whose job this is, for fair share (default: you)")
    parser.add_argument(
        "--no-preempt", dest="preempt", action="store_false",
        help="never stop this job for one of higher priority",
    )  # fmt: skip
    parser.add_argument(
        "--time-limit", metavar="DURATION",
        help="running time over all attempts (90s, 90m, 12h, 2d); then it fails as time_limit",
    )  # fmt: skip
    parser.add_argument(
        "--notify", action="append", default=[], metavar="URL",
        help="POST a signed JSON notice here when the job ends (repeatable)",
    )  # fmt: skip


def _sharing_from(args: argparse.Namespace) -> dict[str, Any]:
    from core.durations import parse_duration
    from scheduler.owners import check_owner

    limit = args.time_limit
    return {
        "owner": check_owner(args.owner) if args.owner is not None else None,
        "preempt": args.preempt,
        "time_limit": parse_duration(limit, "--time-limit") if limit is not None else None,
        "notify": args.notify,
    }


def _sweep_targets(sweep: argparse.ArgumentParser) -> None:
    """`sweep KIND ...` (one parser per kind) and `sweep show ID`."""
    from kinds import kind_modules

    targets = sweep.add_subparsers(required=True, metavar="{KIND,show}")
    show = targets.add_parser("show", help="the sweep's jobs: swept fields, status, metrics")
    show.set_defaults(handler=cmd_sweep_show)
    show.add_argument("sweep_id", metavar="ID")
    show.add_argument("--metric", metavar="NAME", help="best first by this metric's last value")
    show.add_argument("--mode", choices=["min", "max"], default="min", help="best is min or max")
    show.add_argument("--json", action="store_true")
    for kind in sorted(kind_modules()):
        if kind == "show":
            continue
        points = targets.add_parser(kind, description=f"one {kind} job per point of the sweep")
        points.set_defaults(handler=cmd_sweep, kind=kind)
        _sweep_arguments(points)


def _sweep_arguments(points: argparse.ArgumentParser) -> None:
    points.add_argument(
        "--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
        help="a swept field and its values, each read as --set reads one (repeatable)",
    )  # fmt: skip
    points.add_argument("--random", type=int, metavar="N", help="N random points instead")
    points.add_argument("--seed", type=int, default=0, help="of the random points")
    points.add_argument(
        "--range", action="append", default=[], metavar="FIELD=LOW:HIGH[:log]",
        help="with --random: uniform (:log log-uniform) in [LOW, HIGH] (repeatable)",
    )  # fmt: skip
    _spec_fields(points)  # the fields every job of the sweep shares
    _placement_arguments(points)
    _sharing_arguments(points)
    points.add_argument("--json", action="store_true", help='print {"sweep": ID, "jobs": [...]}')


def _placement_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and how eagerly a job runs: `submit` and `sweep` take these."""
    parser.add_argument("--priority", type=int, default=0, help="higher runs first")
    parser.add_argument("--queue", help="run on this queue instead of the kind's default")
    parser.add_argument("--max-attempts", type=int, default=3)


def _spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help="job kind, e.g. dcgan")
    _spec_fields(parser)


def _spec_fields(parser: argparse.ArgumentParser) -> None:
    """--set and --file, which `_spec_from` reads."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a spec field; VALUE is read as JSON when it parses, else a string",
    )
    parser.add_argument("--file", type=Path, help="a JSON file with spec fields")


def _spec_from(args: argparse.Namespace) -> dict[str, Any]:
    from scheduler.specs import SpecError, parse_assignments

    spec: dict[str, Any] = {}
    if args.file:
        try:
            spec = json.loads(args.file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise SpecError(f"--file {args.file}: {error}") from None
        if not isinstance(spec, dict):
            raise SpecError(f"--file {args.file}: expected a JSON object")
    spec.update(parse_assignments(args.kind, args.set))
    return spec


def _client() -> Client:
    from scheduler.client import Client

    return Client()


def cmd_submit(args: argparse.Namespace) -> int:
    job_id = _client().submit(
        args.kind,
        _spec_from(args),
        priority=args.priority,
        after=args.after,
        queue=args.queue,
        max_attempts=args.max_attempts,
        continues=args.continues,
        **_sharing_from(args),
    )
    print(json.dumps({"id": job_id}) if args.json else job_id)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    view = _client().get(args.job)
    if args.json:
        print(json.dumps(view.as_json(), indent=2))
        return 0
    lines = [
        f"job       {view.id}  ({view.kind}, queue {view.queue}, priority {view.priority})",
        f"status    {view.status}  attempts {view.attempts}/{view.max_attempts}",
        f"progress  {_progress_text(view)}",
        f"owner     {view.owner or '-'}" + ("" if view.preemptible else "  (not preemptible)"),
        f"time      {_time_text(view)}",
    ]
    if view.worker:
        lines.append(f"worker    {view.worker}  pid {view.worker_pid}")
    if view.resumed_from_step is not None:
        lines.append(f"resumed   from step {view.resumed_from_step}")
    if view.depends_on:
        lines.append(f"after     {view.depends_on}")
    if view.continues:
        lines.append(f"from      {view.continues}")
    if view.sweep_id:
        lines.append(f"sweep     {view.sweep_id}")
    if view.error_code:
        lines.append(f"error     {view.error_code}: {view.error_message}")
    for output in view.outputs:
        lines.append(f"output    {_output_text(output)}")
    print("\n".join(lines))
    return 0


def _time_text(view: JobView) -> str:
    from core.durations import format_duration

    used = format_duration(view.time_used_seconds)
    if view.time_limit_seconds is None:
        return f"{used} used, no limit"
    return f"{used} used of {format_duration(view.time_limit_seconds)}"


def _progress_text(view: Any) -> str:
    parts = [f"{view.progress * 100:5.1f}%"]
    if view.step is not None:
        parts.append(f"step {view.step}/{view.total_steps}")
    if view.epoch is not None:
        parts.append(f"epoch {view.epoch}")
    parts.extend(f"{k} {v:.4g}" for k, v in view.metrics.items())
    return "  ".join(parts)


def _output_text(output: Any) -> str:
    where = f"epoch {output.epoch}" if output.epoch is not None else f"step {output.step}"
    return f"#{output.id:<6} {output.role:<10} {where:<12} {output.location}"


def cmd_list(args: argparse.Namespace) -> int:
    views = _client().list(
        status=args.status, limit=args.limit, owner=args.owner, sweep_id=args.sweep
    )
    if args.json:
        print(json.dumps([v.as_json() for v in views], indent=2))
        return 0
    for view in views:
        created = view.created_at.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{view.id}  {view.kind:<14} {view.status:<10} {view.progress * 100:5.1f}%  {created}"
            f"  {view.owner}"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from scheduler.stack import stack_running

    client = _client()
    job_id = client.submit(args.kind, _spec_from(args))
    print(f"job {job_id} submitted", flush=True)
    with stack_running(client.settings, args.workers) as log:
        code = _watch(client, job_id)
    view = client.get(job_id)
    for output in view.outputs:
        print(_output_text(output))
    print(_ending(view, log))
    return code


def cmd_watch(args: argparse.Namespace) -> int:
    client = _client()
    code = _watch(client, args.job)
    if code:
        print(_ending(client.get(args.job)))
    return code


def _watch(client: Any, job_id: str) -> int:
    width = 30
    while True:
        view = client.get(job_id)
        filled = int(view.progress * width)
        bar = "#" * filled + "-" * (width - filled)
        sys.stdout.write(f"\r{view.id} [{bar}] {view.status:<9} {_progress_text(view)}\033[K")
        sys.stdout.flush()
        if view.final:
            sys.stdout.write("\n")
            return 0 if view.status == "succeeded" else 1
        time.sleep(0.5)


def cmd_wait(args: argparse.Namespace) -> int:
    view = _client().wait(args.job, timeout=args.timeout)
    print(_ending(view))
    return 0 if view.status == "succeeded" else 1


def _ending(view: JobView, log: Path | None = None) -> str:
    """How a job ended, in one line: for a failure its code, message and where to look."""
    if view.status == "succeeded":
        return f"{view.id} succeeded"
    line = f"{view.id} {view.status}"
    if view.error_code:
        line += f": {view.error_code}: {view.error_message}"
    where = [f"history: atelier events {view.id}"]
    if log is not None:
        where.append(f"workers' log: {log}")
    return f"{line} ({'; '.join(where)})"


def cmd_change(args: argparse.Namespace) -> int:
    if args.sweep is not None or args.job is None:
        return _change_sweep(args)
    client = _client()
    action = {"cancel": client.cancel, "pause": client.pause, "resume": client.resume}
    name = args.action
    outcome = action[name](args.job)
    if outcome is None:
        view = client.get(args.job)
        print(f"atelier: error: cannot {name} job {view.id}: it is {view.status}", file=sys.stderr)
        return 1
    print(f"{args.job} {outcome}")
    return 0


def _change_sweep(args: argparse.Namespace) -> int:
    from scheduler.sweeps import SweepError, change_sweep

    name = args.action
    if (args.job is None) == (args.sweep is None):
        raise SweepError(f"{name} takes a job or --sweep ID, not both or neither")
    outcomes = change_sweep(_client(), args.sweep, name)
    for job_id, outcome in outcomes:
        if outcome is not None:
            print(f"{job_id} {outcome}")
    if not any(outcome for _, outcome in outcomes):
        print(f"atelier: error: no job of sweep {args.sweep} can {name}", file=sys.stderr)
        return 1
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from scheduler.sweeps import submit_sweep, sweep_points

    points = sweep_points(args.kind, args.grid, args.range, args.random, args.seed)
    sweep_id, job_ids = submit_sweep(
        _client(), args.kind, _spec_from(args), points,
        priority=args.priority, queue=args.queue, max_attempts=args.max_attempts,
        **_sharing_from(args),
    )  # fmt: skip
    if len(job_ids) < len(points):
        print(f"atelier: {len(points) - len(job_ids)} repeated points submitted once",
              file=sys.stderr)  # fmt: skip
    print(json.dumps({"sweep": sweep_id, "jobs": job_ids}) if args.json else sweep_id)
    if not args.json:
        print("\n".join(job_ids))
    return 0


def cmd_sweep_show(args: argparse.Namespace) -> int:
    from scheduler.sweeps import sweep_report

    report = sweep_report(_client(), args.sweep_id, args.metric, args.mode)
    print(json.dumps(report.as_json(), indent=2) if args.json else "\n".join(report.lines()))
    return 0


def cmd_outputs(args: argparse.Namespace) -> int:
    client = _client()
    view = client.get(args.job)
    chosen = [
        output
        for output in view.outputs
        if args.role in (None, output.role) and args.name in (None, output.name)
    ]
    if args.download is not None:
        for output in chosen:
            print(client.download(output, args.download))
        return 0
    if args.json:
        print(json.dumps([o.__dict__ for o in chosen], indent=2))
        return 0
    for output in chosen:
        print(_output_text(output))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    for event in _client().events(args.job):
        print(json.dumps(event))
    return 0


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def cmd_up(args: argparse.Namespace) -> int:
    from core.settings import load_settings
    from scheduler.stack import run_stack

    _logging()
    return run_stack(load_settings(), args.workers, args.queues.split(","))


def _serving() -> tuple[Settings, threading.Event]:
    """A long-running service's start: logging, settings, a current schema, and the
    event that SIGTERM and Ctrl-C set to stop it."""
    import signal
    import threading

    from core.settings import load_settings
    from db.migrate import ensure_current

    _logging()
    settings = load_settings()
    ensure_current(settings.database_url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return settings, stop


def cmd_scheduler(args: argparse.Namespace) -> int:
    from core.broker import redis_client
    from core.celery_app import make_app
    from db.engine import session_factory
    from scheduler.loop import Scheduler
    from scheduler.notifier import Notifier

    settings, stop = _serving()
    sessions = session_factory(settings.database_url)
    if args.metrics_port is not None:
        from scheduler.metrics import serve_metrics

        serve_metrics(settings, args.metrics_port, args.metrics_address)
    # Notices go out from a thread of their own: a slow receiver never delays a tick.
    notifier = Notifier(settings, redis_client(settings)).start(stop)
    Scheduler(settings, sessions, make_app(settings), redis_client(settings)).run(stop)
    notifier.join(timeout=10)
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from scheduler.metrics import serve_metrics

    settings, stop = _serving()
    server = serve_metrics(settings, args.port, args.address)
    print(f"atelier metrics: http://{args.address}:{args.port}/metrics; Ctrl-C to stop", flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    return 0


def cmd_tensorboard(args: argparse.Namespace) -> int:
    from scheduler.tensorboard import serve

    _, stop = _serving()
    client = _client()
    chosen = [client.get(job).id for job in args.jobs]  # prefixes resolved, unknown refused
    if args.sweep is not None:
        chosen += [view.id for view in client.sweep_jobs(args.sweep)]
    job_ids = chosen if args.jobs or args.sweep is not None else None
    return serve(client, job_ids, port=args.port, host=args.host, stop=stop)


def cmd_flower(args: argparse.Namespace) -> int:
    from scheduler.flower import run_flower

    _logging()
    return run_flower(args.port, args.address, args.local_only, args.url_prefix)


def cmd_db(args: argparse.Namespace) -> int:
    from core.settings import load_settings
    from db.migrate import current_revision, upgrade

    url = load_settings().database_url
    if args.action == "upgrade":
        upgrade(url)
    print(f"schema at {current_revision(url)}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from scheduler.retention import PruneRequest, Retention

    request = PruneRequest.parse(
        args.older_than, args.status, keep_models=args.keep_models, dry_run=args.dry_run
    )  # checked before the database is opened
    report = Retention(_client()).prune(request)
    print(json.dumps(report.as_json(), indent=2) if args.json else "\n".join(report.lines()))
    return 0


def cmd_du(args: argparse.Namespace) -> int:
    from scheduler.retention import Retention

    client = _client()
    job_id = client.get(args.job).id if args.job else None  # a prefix is enough
    usage = Retention(client).usage(job_id)
    if args.json:
        print(json.dumps(usage.as_json(), indent=2))
    else:
        print("\n".join(usage.job_lines() if job_id else usage.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
