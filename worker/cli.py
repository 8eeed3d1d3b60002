"""`atelier worker` (`python -m worker`): a Celery worker process, or with `--gpus` one
per GPU. The `atelier` command hands `atelier worker …` over to this program."""

from __future__ import annotations

import argparse
import logging
import sys

from core.errors import UserError
from db.migrate import SchemaOutdated

DEFAULT_QUEUES = "gpu,cpu"


def parser() -> argparse.ArgumentParser:
    worker = argparse.ArgumentParser(
        prog="atelier worker", description="run a Celery worker process (one per GPU with --gpus)"
    )
    worker.add_argument("--name", default="worker")
    worker.add_argument("--queues", default=DEFAULT_QUEUES)
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument(
        "--gpus",
        type=_gpus_option,
        metavar="LIST|all|any",
        help="one worker process per GPU (gpu0@host…, concurrency 1, pinned with "
        "CUDA_VISIBLE_DEVICES): GPU numbers such as 0,1,2,3; `all` detected GPUs; `any` one "
        "GPU no other worker holds; with no GPU found, one CPU worker",
    )
    return worker


def _gpus_option(value: str) -> str | tuple[int, ...]:
    from worker.gpus import parse_gpus_option

    return parse_gpus_option(value)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.gpus is not None and args.concurrency != 1:
        print(
            "atelier worker: error: --gpus runs one process per GPU with concurrency 1: "
            "drop --concurrency",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return run(args)
    except (UserError, SchemaOutdated) as error:
        print(f"atelier worker: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from core.settings import load_settings
    from db.migrate import ensure_current

    settings = load_settings()
    ensure_current(settings.database_url)
    queues = args.queues.split(",")
    if args.gpus is not None:
        from worker import gpus

        code = gpus.run(args.gpus, queues, settings)
        if code is not None:
            return code
    from worker.process import run_worker

    run_worker(args.name, queues, args.concurrency)
    return 0
